"""Small builders shared by several test modules."""
