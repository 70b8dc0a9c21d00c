"""The local lab: the seed's experiment on one machine with real HAProxy and real Envoy.

    lab.py         lab_up / lab_down / lab_status, local_target(), LocalTarget
    supervisor.py  the long-lived process owning every lab process; serves the lab API
    controller.py  Deployment + ReplicaSet controllers and the scheduler (anti-affinity)
    kubelet.py     one pod's life: start, readiness, preStop, SIGTERM, grace deadline
    deployment.py  the applied Deployment (apply, scale, rollout restart), kept in deployment.json
    podspec.py     IGW manifest -> what the lab runs (containers as local processes)
    procs.py       attached children: process groups, PDEATHSIG, timestamped logs
    client.py      LocalCluster over the lab API and the state dir
    haproxy.py     HAProxy master-worker process and LocalBalancer (with haproxy_cli.py)
    addresses.py, state.py, status.py, values.py, api.py: addressing, files, status, cfg values, API

Nothing is imported here, so `import gtnb.targets.local.haproxy` stays light.
"""
