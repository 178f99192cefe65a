"""PixelFlow's event chain on one machine, and its provisioning.

* :func:`provision` creates the upload and output buckets, the SQS queue with its dead-letter
  queue and redrive policy, the queue policy and the upload bucket's ``s3:ObjectCreated:*``
  notification, idempotently, on AWS or on a local endpoint (moto's server).
* :class:`Stack` runs the whole chain as real child processes: moto server, Prefect server,
  the ``local`` deployment with its upload trigger, a process worker and the bridge.
  ``pixelflow stack up`` / ``pixelflow stack down`` drive it.
"""

from pixelflow.stack.provision import NOTIFICATION_ID, Provisioned, provision
from pixelflow.stack.services import (
    DEFAULT_MOTO_PORT,
    DEFAULT_PREFECT_PORT,
    DEPLOYMENT_NAME,
    FLOW_NAME,
    WORK_POOL,
    Stack,
    StackConfig,
    StackError,
    make_sample,
)
from pixelflow.stack.state import process_alive, read_state, stop_from_state

__all__ = [
    "DEFAULT_MOTO_PORT", "DEFAULT_PREFECT_PORT", "DEPLOYMENT_NAME", "FLOW_NAME", "NOTIFICATION_ID", "WORK_POOL",
    "Provisioned", "Stack", "StackConfig", "StackError", "make_sample", "process_alive", "provision", "read_state",
    "stop_from_state",
]
