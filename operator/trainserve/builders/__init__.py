"""Pure builders: a resource (and the operator's settings) in, the Kubernetes objects it needs out.

``raypod`` builds every Ray pod; ``rayjob`` and ``rayservice`` the KubeRay objects of each kind; ``rbac`` a
job's status access; ``common`` the metadata and security every object shares.
"""
