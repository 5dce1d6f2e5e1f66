//! Host capability checks of a node plan's handlers ([`Requirement`]): is `/dev/kvm` there,
//! `/dev/vhost-vsock`, the hypervisor's binary, the devmapper pool. Files are looked at, never
//! opened: the agent's pod has no device access, and a check must not change anything.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use sandbox_runtime::node_plan::{Handler, Requirement, RequirementKind};

use crate::host::Host;

/// Why a requirement does not hold: its one-word reason and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub reason: String,
    pub message: String,
}

/// Checks one requirement on `host`.
pub fn check(host: &Host, requirement: &Requirement) -> Result<(), Missing> {
    let path = host.path(&requirement.path);
    let found = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "missing".to_string(),
        Err(e) => format!("unreadable ({e})"),
        Ok(meta) => {
            let kind = meta.file_type();
            let ok = match requirement.kind {
                RequirementKind::CharDevice => kind.is_char_device(),
                RequirementKind::BlockDevice => kind.is_block_device(),
                RequirementKind::Executable => {
                    kind.is_file() && meta.permissions().mode() & 0o111 != 0
                }
                RequirementKind::File => kind.is_file(),
            };
            if ok {
                return Ok(());
            }
            "not of the expected kind".to_string()
        }
    };
    Err(Missing {
        reason: requirement.reason.clone(),
        message: format!(
            "{} is {found}: {} is needed ({:?})",
            requirement.path, requirement.purpose, requirement.kind
        ),
    })
}

/// The first requirement of `requirements` that does not hold.
pub fn first_missing(host: &Host, requirements: &[Requirement]) -> Option<Missing> {
    requirements.iter().find_map(|r| check(host, r).err())
}

/// The handlers whose entries may be written on this host (their `writtenOnlyIf` holds).
pub fn writable<'a>(host: &Host, handlers: &'a [Handler]) -> Vec<&'a Handler> {
    handlers
        .iter()
        .filter(|h| first_missing(host, &h.written_only_if).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: RequirementKind, path: &str) -> Requirement {
        Requirement {
            kind,
            path: path.into(),
            reason: "NoThing".into(),
            purpose: "the thing".into(),
        }
    }

    #[test]
    fn kinds_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path());
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/tool"), b"x").unwrap();
        assert!(check(&host, &req(RequirementKind::File, "/bin/tool")).is_ok());
        let e = check(&host, &req(RequirementKind::Executable, "/bin/tool")).unwrap_err();
        assert_eq!(e.reason, "NoThing");
        assert!(e.message.contains("not of the expected kind"), "{e:?}");
        std::fs::set_permissions(
            dir.path().join("bin/tool"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(check(&host, &req(RequirementKind::Executable, "/bin/tool")).is_ok());
        let e = check(&host, &req(RequirementKind::CharDevice, "/dev/kvm")).unwrap_err();
        assert!(
            e.message
                .starts_with("/dev/kvm is missing: the thing is needed"),
            "{e:?}"
        );
        // The machine's own /dev/null is a character device, not a block device.
        let root = Host::new("/");
        assert!(check(&root, &req(RequirementKind::CharDevice, "/dev/null")).is_ok());
        assert!(check(&root, &req(RequirementKind::BlockDevice, "/dev/null")).is_err());
    }
}
