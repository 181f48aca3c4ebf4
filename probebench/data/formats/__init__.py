"""Readers for the standard dataset layouts; each turns a folder into an `ImageDataset` without copying."""
