"""Audio: file I/O, resampling, log-mel features, capture and playback."""
