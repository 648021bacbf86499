"""The scheduler: places pods that have no ``spec.nodeName`` on nodes, as kube-scheduler does.

Layers, each importing only those below it::

    scheduler   informers → cache + queue; the scheduling loop; binding; failures, events
    queue       active / backoff / unschedulable pods, moved by cluster events
    framework   one profile: filter plugins in order, weighted score plugins; the fit error
    plugins     one module per plugin; ``plugins.REGISTRY`` maps names to classes
    cache       nodes with incrementally kept aggregates, assumed pods, services, claims
    info        PodInfo and NodeInfo: what scheduling reads of a pod and a node, parsed once
    config      profiles from a KubeSchedulerConfiguration file
    metrics     the scheduler's own Prometheus registry
"""
