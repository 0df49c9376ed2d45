"""A Flask app that serves a model it never imports: its requests go through the broker."""
