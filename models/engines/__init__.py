"""Engine interfaces (base) and their implementations: embedded CPU and production servers."""
