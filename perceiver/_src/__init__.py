"""Internals of the `perceiver` library; the public modules re-export what users need."""
