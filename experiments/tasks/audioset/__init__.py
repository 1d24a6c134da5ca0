"""AudioSet-style multi-label audio, video and audio+video classification (paper 1)."""
