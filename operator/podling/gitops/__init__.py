"""The GitOps operator: git source → render and validate → plan → apply, with webhooks."""
