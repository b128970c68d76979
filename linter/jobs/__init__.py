"""Child interpreters: ``run`` (parent: timeout, kill, memory cap) and ``worker`` (the child's entry point)."""
