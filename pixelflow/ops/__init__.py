"""Operating PixelFlow: what became of uploads (:mod:`~pixelflow.ops.assets`), the dead-letter
queue (:mod:`~pixelflow.ops.dlq`), the reconciler for lost events (:mod:`~pixelflow.ops.reconcile`),
manual retries (:mod:`~pixelflow.ops.runs`), signed webhooks (:mod:`~pixelflow.ops.webhook_dispatch`,
:mod:`~pixelflow.ops.webhook_endpoints`; the retired notifications in :mod:`~pixelflow.ops.notifications`)
and the crash-recovery automations (:mod:`~pixelflow.ops.automations`)."""
