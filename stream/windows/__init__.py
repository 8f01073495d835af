"""Window specs, watermarks and window state: pure, integer milliseconds, half-open ranges."""
