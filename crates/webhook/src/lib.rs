//! Admission webhooks: validation of Shoots' runtime configuration in the garden and
//! mutation of OperatingSystemConfigs in the seed where node provisioning must change.
//! Filled by the webhook issues; the crate exists so the layout reads as the architecture.
