"""One router per concern: predict; operations (health, readiness, metadata, metrics); the loop
(feedback, monitor); pages for people (index, model card, docs). Each is built from the settings,
which fix its limits."""
