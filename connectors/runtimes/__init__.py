"""Cluster runtimes behind one interface: Kubernetes and the local host."""
