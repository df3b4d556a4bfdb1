"""Domain functions: plain arguments in, models out. They flush when they need ids, never commit."""
