"""One router per concern: predict; operations (health, readiness, metadata, metrics, report);
the loop (feedback, monitor). Each is built from the settings, which fix its limits."""
