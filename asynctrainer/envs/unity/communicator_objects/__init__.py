"""ML-Agents' communicator messages (package ``communicator_objects``, communication API 1.5.0).

The ``.proto`` files here are written for this project from the protocol's field tables: same
package, message and field names, numbers and types as Unity's, so the gRPC method path
(``/communicator_objects.UnityToExternalProto/Exchange``) and the bytes on the wire are Unity's.
The ``*_pb2`` modules are generated from them (``nox -s protos``) and checked in.
"""

COMMUNICATION_API_VERSION = "1.5.0"
