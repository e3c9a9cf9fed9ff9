"""Adult income classifier: training, serving, drift checks and a monitoring agent."""
