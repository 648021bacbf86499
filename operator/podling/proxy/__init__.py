"""The service proxy (``podling proxy``): makes Services reachable on a node, as kube-proxy does.

Layers, each depending only on the ones before it:

* ``model``: Services and Endpoints (API objects) -> :class:`~podling.proxy.model.ServicePort`
  values, the one pure description every mode programs.
* ``iptables``: ServicePorts -> iptables-restore text (pure), and running it on the node.
* ``userspace``: ServicePorts -> asyncio TCP listeners relaying to endpoints.
* ``host``: machine-wide settings every proxy on this machine shares (route_localnet, the
  service range's local route), reference-counted across processes.
* ``metrics``: the proxy's Prometheus registry.
* ``proxy``: the component: informers, a debounced sync through a work queue, the
  LoadBalancer status writer, mode selection, start and clean shutdown.
"""
