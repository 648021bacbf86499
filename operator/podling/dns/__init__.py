"""Cluster DNS: ``zone`` answers names from Services and Endpoints, ``wire`` speaks the protocol,
``server`` listens (UDP and TCP) and keeps the kube-system/kube-dns Service pointing at itself."""
