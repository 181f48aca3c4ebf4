"""Views: datasets made from a dataset (part crops, sliding windows), named and made in one place."""
