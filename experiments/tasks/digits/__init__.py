"""scikit-learn's 8x8 handwritten digits (the Quickstart demo)."""
