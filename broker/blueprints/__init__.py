"""One blueprint per resource: tasks (clients), leases (workers), queues and meta (operators)."""
