//! What a reconcile writes about itself: the status (Processing, Succeeded, Error), Events,
//! the finalizer and gardenlet's annotations.

use super::*;

/// The events.k8s.io API's limit for an Event's note, in bytes.
pub(crate) const EVENT_NOTE_MAX: usize = 1024;

impl Target<'_> {
    /// One operation as the contract frames it: Processing, the work, then Succeeded, or
    /// Error (with an Event) when the work fails. Returns the object as last written.
    pub(super) async fn operate<T>(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
        work: impl Future<Output = Result<T>>,
    ) -> Result<(ContainerRuntime, T)> {
        let cr = self.processing(cr, op).await?;
        let value = match work.await {
            Ok(value) => value,
            Err(e) => return Err(self.fail(&cr, op, e).await),
        };
        let cr = self.succeeded(&cr, op).await?;
        Ok((cr, value))
    }

    /// Status: `op` is Processing (lastError and observedGeneration untouched).
    pub(super) async fn processing(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
    ) -> Result<ContainerRuntime> {
        self.status(
            cr,
            contract::processing_patch(op, contract::status_time(cr, Timestamp::now())),
        )
        .await
    }

    /// Status: `op` Succeeded for the current generation; lastError cleared.
    pub(super) async fn succeeded(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
    ) -> Result<ContainerRuntime> {
        let generation = cr.metadata.generation;
        self.status(
            cr,
            contract::succeeded_patch(op, generation, contract::status_time(cr, Timestamp::now())),
        )
        .await
    }

    /// Writes the Error status and an Event; returns the error for the backoff.
    pub(super) async fn fail(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
        error: Error,
    ) -> Error {
        self.fail_written(cr, op, error).await.0
    }

    /// [`Self::fail`], and the object with the Error status, if it was written.
    pub(super) async fn fail_written(
        &self,
        cr: &ContainerRuntime,
        op: LastOperationType,
        error: Error,
    ) -> (Error, Option<ContainerRuntime>) {
        let patch = contract::error_patch(
            op,
            &crate::conditions::cut(&error.to_string(), crate::conditions::MESSAGE_MAX),
            &error.codes(),
            cr.metadata.generation,
            contract::status_time(cr, Timestamp::now()),
        );
        let written = match self.status(cr, patch).await {
            Ok(cr) => Some(cr),
            Err(e) => {
                warn!(error = %e, "could not write the Error status");
                None
            }
        };
        self.publish(cr, EventType::Warning, "ReconcileError", error.to_string())
            .await;
        (error, written)
    }

    pub(super) async fn publish(
        &self,
        cr: &ContainerRuntime,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            // The API refuses a note over 1 KiB (and the Event with it): cut, not dropped.
            note: Some(crate::conditions::cut(&note, EVENT_NOTE_MAX)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&event, &cr.object_ref(&())).await {
            debug!(error = %e, "could not publish an Event");
        }
    }

    /// One patch that consumes gardenlet's `reconcile` request and/or adds our finalizer (the
    /// latter guarded by the resourceVersion, so that no finalizer added meanwhile is lost).
    pub(super) async fn update_metadata(
        &self,
        cr: &ContainerRuntime,
        remove_annotation: bool,
        add_finalizer: bool,
    ) -> Result<ContainerRuntime> {
        let mut metadata = serde_json::Map::new();
        if remove_annotation {
            metadata.insert("annotations".into(), json!({OPERATION_ANNOTATION: null}));
        }
        if add_finalizer {
            let mut finalizers = cr.finalizers().to_vec();
            finalizers.push(FINALIZER.to_string());
            metadata.insert("finalizers".into(), json!(finalizers));
            metadata.insert(
                "resourceVersion".into(),
                json!(cr.metadata.resource_version),
            );
        }
        if metadata.is_empty() {
            return Ok(cr.clone());
        }
        self.patch(
            &cr.name_any(),
            json!({"metadata": metadata}),
            "updating annotations and finalizers",
        )
        .await
    }

    pub(super) async fn remove_operation_annotation(&self, cr: &ContainerRuntime) -> Result<()> {
        if contract::operation_annotation(cr).is_some() {
            self.patch(
                &cr.name_any(),
                json!({"metadata": {"annotations": {OPERATION_ANNOTATION: null}}}),
                "removing the operation annotation",
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn patch(
        &self,
        name: &str,
        patch: Value,
        action: &str,
    ) -> Result<ContainerRuntime> {
        self.api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(kube_err(action))
    }

    pub(super) async fn status(
        &self,
        cr: &ContainerRuntime,
        patch: Value,
    ) -> Result<ContainerRuntime> {
        self.api
            .patch_status(
                &cr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(kube_err("writing the status"))
    }
}
