"""The stack as deployed, on one machine (`make stack`, `make stack-down`), and the soak that runs
it under faults (`make soak`): real PostgreSQL, two replicas of two workers, HAProxy, Prometheus,
Alertmanager and the scheduled monitoring job, each started as a process and stopped by its pid.
Operations tooling: it drives the project from the outside and imports only its public parts.
"""
