//! Firecracker's devmapper thin pool, provisioned through the pool's OperatingSystemConfig.
//!
//! Firecracker gives its VMs block devices only, so containerd must hand `kata-fc` its images
//! through the devmapper snapshotter, which needs a thin pool. The pool is node provisioning
//! (it must exist before containerd starts, on every boot), so it goes where Gardener describes
//! nodes: the OperatingSystemConfig of the pools whose Kata ContainerRuntime offers `fc`, as a
//! script and a oneshot systemd unit that gardener-node-agent applies.
//!
//! Unlike the reference extension's script, ours is idempotent: nothing is done when the pool
//! is there; after a reboot the sparse files are re-attached and the pool re-created with its
//! metadata intact; the metadata is zeroed only when the files are created. The devmapper
//! snapshotter's configuration is published below `/run` only once the pool exists (and
//! removed when it does not), before containerd starts; Kata's node plan imports that folder.
//! So containerd never loads a pool configuration that points at nothing (containerd 2.4
//! would lose its CRI plugin), not even after a reboot without this unit.
//!
//! Pure functions: an OSC and the shoot in, a JSON patch out.

use serde_json::{Value, json};

use sandbox_api::Shoot;

use super::RUNTIME_TYPE;
use super::config::{self, Hypervisor};
use super::node::DEVMAPPER_POOL;

/// The systemd unit that ensures the pool.
pub const UNIT: &str = "runtime-sandbox-kata-devmapper.service";
/// Where the pool's sparse files and the script live on the node.
pub const DIR: &str = "/var/lib/runtime-sandbox/kata-devmapper";
/// The script the unit runs.
pub const SCRIPT: &str = "/var/lib/runtime-sandbox/kata-devmapper/ensure-pool.sh";
/// Where the pool's unit publishes the devmapper snapshotter's configuration once the pool
/// exists. Below `/run`, so a reboot removes it: containerd never starts with a pool
/// configured that is not there (containerd 2.4 would lose CRI).
pub const SNAPSHOTTER_DIR: &str = "/run/runtime-sandbox/containerd";
/// The snapshotter configuration file in [`SNAPSHOTTER_DIR`].
pub const SNAPSHOTTER_FILE: &str = "/run/runtime-sandbox/containerd/kata-devmapper.toml";
/// The glob Kata's node plan adds to containerd's `imports`.
pub const SNAPSHOTTER_IMPORT: &str = "/run/runtime-sandbox/containerd/*.toml";
/// The OSC label naming the worker pool.
pub const POOL_LABEL: &str = "worker.gardener.cloud/pool";
/// Largest thin-pool metadata device the kernel uses (dm-thin's limit is 16 GiB).
const MAX_META_BYTES: u64 = 16 << 30;
/// Smallest metadata device we create.
const MIN_META_BYTES: u64 = 256 << 20;

/// The pool a worker pool's nodes need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Size of the data file (sparse), bytes.
    pub data_bytes: u64,
    /// Size of the metadata file (sparse), bytes.
    pub meta_bytes: u64,
}

impl Pool {
    /// A pool with `data_bytes` of data and metadata sized at 1/50 of it (within
    /// 256 MiB..16 GiB), as containerd's devmapper guide suggests for thin pools.
    pub fn with_data(data_bytes: u64) -> Self {
        Pool {
            data_bytes,
            meta_bytes: (data_bytes / 50).clamp(MIN_META_BYTES, MAX_META_BYTES),
        }
    }
}

/// The pool the nodes of `pool` need: Some when the pool's Kata ContainerRuntime offers
/// Firecracker. An invalid providerConfig yields None (its ContainerRuntime reports the error;
/// the node agent then never labels `kata-fc` ready, since the pool is missing).
pub fn pool_for(shoot: &Shoot, pool: &str) -> Option<Pool> {
    let raw = shoot
        .worker(pool)?
        .runtime(RUNTIME_TYPE)?
        .provider_config
        .as_ref();
    let config = config::parse(raw).ok()?;
    if !config.hypervisors.contains(&Hypervisor::Fc) {
        return None;
    }
    Some(Pool::with_data(config.devmapper_pool_size.bytes()?))
}

/// The pool's device-mapper name (the node agent checks `/dev/mapper/<name>`).
pub fn pool_name() -> &'static str {
    DEVMAPPER_POOL.trim_start_matches("/dev/mapper/")
}

/// The script: idempotent, numbers only from validated input, no other substitution.
pub fn script(pool: &Pool) -> String {
    format!(
        r#"#!/bin/bash
# Firecracker's devmapper thin pool for Kata Containers, from gardener-extension-runtime-sandbox.
# Idempotent: nothing happens when the pool is there; after a reboot the sparse files are
# re-attached and the pool re-created with its metadata kept; metadata is zeroed only when
# the files are created here.
# containerd's devmapper snapshotter is configured (below /run, imported by the node agent's
# containerd configuration) only while the pool exists.
set -euo pipefail
pool={name}
dir={DIR}
data_bytes={data}
meta_bytes={meta}
snapshotter_dir={SNAPSHOTTER_DIR}
snapshotter_file=$snapshotter_dir/kata-devmapper.toml

snapshotter_config() {{
  cat <<TOML
version = 2
[plugins."io.containerd.snapshotter.v1.devmapper"]
  pool_name = "$pool"
  root_path = "/var/lib/containerd/io.containerd.snapshotter.v1.devmapper"
  base_image_size = "10GB"
  discard_blocks = true
TOML
}}
publish() {{
  mkdir -p "$snapshotter_dir"
  if [ -f "$snapshotter_file" ] && [ "$(cat "$snapshotter_file")" = "$(snapshotter_config)" ]; then
    return
  fi
  snapshotter_config > "$snapshotter_file.tmp"
  mv "$snapshotter_file.tmp" "$snapshotter_file"
}}

if dmsetup status "$pool" >/dev/null 2>&1; then
  publish
  echo "thin pool $pool is there; nothing to do"
  exit 0
fi
rm -f "$snapshotter_file"
mkdir -p "$dir"
have_data=false
have_meta=false
[ -e "$dir/data" ] && have_data=true
[ -e "$dir/meta" ] && have_meta=true
if [ "$have_data" != "$have_meta" ]; then
  echo "only one of $dir/data and $dir/meta exists: refusing to guess; remove both to start over" >&2
  exit 1
fi
fresh=false
if [ "$have_data" = false ]; then
  truncate -s "$data_bytes" "$dir/data"
  truncate -s "$meta_bytes" "$dir/meta"
  fresh=true
fi

attach() {{
  local device
  device=$(losetup --list --noheadings --output NAME --associated "$1" | head -n 1)
  if [ -z "$device" ]; then
    device=$(losetup --find --show "$1")
  fi
  echo "$device"
}}
data_device=$(attach "$dir/data")
meta_device=$(attach "$dir/meta")
if [ "$fresh" = true ]; then
  dd if=/dev/zero of="$meta_device" bs=4096 count=1 status=none
fi
sectors=$(( $(blockdev --getsize64 "$data_device") / 512 ))
dmsetup create "$pool" --table "0 $sectors thin-pool $meta_device $data_device 128 32768 1 skip_block_zeroing"
publish
echo "thin pool $pool created on $data_device (data) and $meta_device (metadata)"
"#,
        name = pool_name(),
        data = pool.data_bytes,
        meta = pool.meta_bytes,
    )
}

/// The systemd unit: before containerd, wanted (not required) by it, so a failing pool
/// delays nothing else and breaks no runc pod; the node agent then leaves `kata-fc` unlabelled.
pub fn unit() -> String {
    format!(
        "[Unit]\n\
         Description=Devmapper thin pool for Kata Containers with Firecracker (gardener-extension-runtime-sandbox)\n\
         After=local-fs.target\n\
         Before=containerd.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={SCRIPT}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target containerd.service\n"
    )
}

/// The OSC file entry for the script.
pub fn file_entry(pool: &Pool) -> Value {
    json!({
        "path": SCRIPT,
        "permissions": 0o755,
        "content": {"inline": {"encoding": "", "data": script(pool)}},
    })
}

/// The OSC unit entry.
pub fn unit_entry() -> Value {
    json!({
        "name": UNIT,
        "command": "start",
        "enable": true,
        "content": unit(),
        "filePaths": [SCRIPT],
    })
}

/// Why an OSC is left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `spec.purpose` is not `reconcile` (the provision OSC only boots gardener-node-agent,
    /// which then applies the reconcile OSC, ours included).
    NotReconcile,
    /// The OSC has no `worker.gardener.cloud/pool` label.
    NoPool,
    /// The pool does not offer Firecracker.
    NoFirecracker,
    /// Everything is there already, byte for byte.
    UpToDate,
}

/// The JSON patch (RFC 6902 operations) that makes `osc` carry the pool's script and unit, or
/// why none is needed. Applying the patch and mutating again yields no patch.
pub fn mutation(osc: &Value, shoot: &Shoot) -> Result<Vec<Value>, Skip> {
    let spec = &osc["spec"];
    if spec["purpose"].as_str() != Some("reconcile") {
        return Err(Skip::NotReconcile);
    }
    let pool_name = osc["metadata"]["labels"][POOL_LABEL]
        .as_str()
        .ok_or(Skip::NoPool)?;
    let pool = pool_for(shoot, pool_name).ok_or(Skip::NoFirecracker)?;
    let mut ops = Vec::new();
    upsert(&mut ops, spec, "files", "path", file_entry(&pool));
    upsert(&mut ops, spec, "units", "name", unit_entry());
    if ops.is_empty() {
        Err(Skip::UpToDate)
    } else {
        Ok(ops)
    }
}

/// Adds to `ops` what puts `entry` into `spec.<list>` (identified by `key`).
fn upsert(ops: &mut Vec<Value>, spec: &Value, list: &str, key: &str, entry: Value) {
    match spec.get(list).and_then(Value::as_array) {
        None => ops.push(json!({"op": "add", "path": format!("/spec/{list}"), "value": [entry]})),
        Some(items) => match items.iter().position(|i| i[key] == entry[key]) {
            Some(index) if items[index] == entry => {}
            Some(index) => ops.push(
                json!({"op": "replace", "path": format!("/spec/{list}/{index}"), "value": entry}),
            ),
            None => {
                ops.push(json!({"op": "add", "path": format!("/spec/{list}/-"), "value": entry}))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shoot(kata: Value) -> Shoot {
        serde_json::from_value(json!({
            "spec": {"provider": {"type": "local", "workers": [
                {"name": "fc", "cri": {"name": "containerd", "containerRuntimes": [
                    {"type": "kata", "providerConfig": kata}]}},
                {"name": "plain", "cri": {"name": "containerd"}},
            ]}}
        }))
        .unwrap()
    }

    fn osc(pool: &str, purpose: &str) -> Value {
        json!({
            "metadata": {"name": "gardener-node-agent-x", "labels": {POOL_LABEL: pool}},
            "spec": {"purpose": purpose, "files": [{"path": "/etc/x", "content": {"inline": {"data": "x"}}}]},
        })
    }

    fn apply(osc: &mut Value, ops: &[Value]) {
        for op in ops {
            let path = op["path"].as_str().unwrap();
            let (parent, last) = path.rsplit_once('/').unwrap();
            let target = osc.pointer_mut(parent).unwrap();
            match (op["op"].as_str().unwrap(), last) {
                ("add", "-") => target.as_array_mut().unwrap().push(op["value"].clone()),
                ("add", key) => {
                    target[key] = op["value"].clone();
                }
                ("replace", index) => {
                    target[index.parse::<usize>().unwrap()] = op["value"].clone();
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
    }

    const FC: &str = config::API_VERSION;

    #[test]
    fn only_reconcile_oscs_of_pools_offering_firecracker() {
        let fc = shoot(
            json!({"apiVersion": FC, "kind": "KataConfiguration", "hypervisors": ["qemu", "fc"]}),
        );
        let qemu =
            shoot(json!({"apiVersion": FC, "kind": "KataConfiguration", "hypervisors": ["qemu"]}));
        assert_eq!(
            mutation(&osc("fc", "provision"), &fc),
            Err(Skip::NotReconcile)
        );
        assert_eq!(
            mutation(&osc("plain", "reconcile"), &fc),
            Err(Skip::NoFirecracker)
        );
        assert_eq!(
            mutation(&osc("fc", "reconcile"), &qemu),
            Err(Skip::NoFirecracker)
        );
        let mut no_label = osc("fc", "reconcile");
        no_label["metadata"]["labels"] = json!({});
        assert_eq!(mutation(&no_label, &fc), Err(Skip::NoPool));
        let invalid = shoot(
            json!({"apiVersion": FC, "kind": "KataConfiguration", "hypervisors": ["vmware"]}),
        );
        assert_eq!(
            mutation(&osc("fc", "reconcile"), &invalid),
            Err(Skip::NoFirecracker)
        );
    }

    #[test]
    fn the_mutation_is_idempotent_and_repairs_edits() {
        let fc = shoot(json!({"apiVersion": FC, "kind": "KataConfiguration",
            "hypervisors": ["fc"], "devmapperPoolSize": "20Gi"}));
        let mut o = osc("fc", "reconcile");
        let ops = mutation(&o, &fc).unwrap();
        assert_eq!(ops.len(), 2, "{ops:#?}");
        apply(&mut o, &ops);
        let once = o.clone();
        assert_eq!(mutation(&o, &fc), Err(Skip::UpToDate));
        assert_eq!(o["spec"]["files"][1]["path"], SCRIPT);
        assert_eq!(o["spec"]["units"][0]["name"], UNIT);
        let script = o["spec"]["files"][1]["content"]["inline"]["data"]
            .as_str()
            .unwrap();
        assert!(
            script.contains(&format!("data_bytes={}\n", 20u64 << 30)),
            "{script}"
        );
        assert!(
            script.contains(&format!("meta_bytes={}\n", (20u64 << 30) / 50)),
            "{script}"
        );
        assert!(script.contains("pool=runtime-sandbox-kata-pool\n"));

        // Someone edited our unit: it is put back, nothing else moves.
        o["spec"]["units"][0]["content"] = json!("[Service]\nExecStart=/bin/false\n");
        let ops = mutation(&o, &fc).unwrap();
        assert_eq!(
            ops,
            [json!({"op": "replace", "path": "/spec/units/0", "value": unit_entry()})]
        );
        apply(&mut o, &ops);
        assert_eq!(o, once);
    }

    #[test]
    fn metadata_size_is_bounded() {
        assert_eq!(Pool::with_data(1 << 30).meta_bytes, MIN_META_BYTES);
        assert_eq!(Pool::with_data(100 << 30).meta_bytes, (100u64 << 30) / 50);
        assert_eq!(Pool::with_data(2000 << 30).meta_bytes, MAX_META_BYTES);
    }

    /// The script against stand-ins for dmsetup, losetup, blockdev and dd (this host has no
    /// device-mapper and no loop devices): first boot creates, zeroes and builds the pool; a
    /// rerun does nothing; after a "reboot" (pool and loop devices gone) the files are
    /// re-attached and the pool re-created without zeroing its metadata.
    #[test]
    fn the_script_is_idempotent_and_keeps_metadata_across_reboots() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let state = tmp.path().join("state");
        let dir = tmp.path().join("pool");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let stub = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let path = bin.join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/bash\nS={}\necho \"{name} $*\" >> $S/calls\n{body}\n",
                    state.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        stub(
            "dmsetup",
            r#"case $1 in status) [ -e $S/pool ] ;; create) touch $S/pool ;; esac"#,
        );
        stub(
            "losetup",
            r#"if [ "$1" = --list ]; then f=${@: -1}; grep -l -x -F "$f" $S/loop* 2>/dev/null | sed 's#.*/#/dev/#' ; exit 0; fi
n=$(ls $S | grep -c '^loop' || true); echo "$3" > $S/loop$n; echo /dev/loop$n"#,
        );
        stub("blockdev", r#"stat -c %s "$(cat $S/${2#/dev/})""#);
        stub("dd", "");
        let mut text = script(&Pool::with_data(1 << 30));
        text = text.replace(&format!("dir={DIR}\n"), &format!("dir={}\n", dir.display()));
        let published = tmp.path().join("run");
        text = text.replace(
            &format!("snapshotter_dir={SNAPSHOTTER_DIR}\n"),
            &format!("snapshotter_dir={}\n", published.display()),
        );
        let snapshotter = published.join("kata-devmapper.toml");
        let script_path = tmp.path().join("ensure-pool.sh");
        std::fs::write(&script_path, text).unwrap();
        let run = || {
            let out = std::process::Command::new("bash")
                .arg(&script_path)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let calls = std::fs::read_to_string(state.join("calls")).unwrap_or_default();
            std::fs::remove_file(state.join("calls")).ok();
            (String::from_utf8_lossy(&out.stdout).into_owned(), calls)
        };

        let (out, calls) = run();
        assert!(
            out.contains("created on /dev/loop0 (data) and /dev/loop1 (metadata)"),
            "{out}"
        );
        assert!(calls.contains("dd if=/dev/zero of=/dev/loop1"), "{calls}");
        assert!(
            calls.contains("thin-pool /dev/loop1 /dev/loop0 128 32768 1 skip_block_zeroing"),
            "{calls}"
        );
        assert!(
            calls.contains(&format!(
                "dmsetup create runtime-sandbox-kata-pool --table 0 {} ",
                (1u64 << 30) / 512
            )),
            "{calls}"
        );
        let config = std::fs::read_to_string(&snapshotter).unwrap();
        assert!(
            config.contains("pool_name = \"runtime-sandbox-kata-pool\""),
            "{config}"
        );
        assert!(config.starts_with("version = 2\n"), "{config}");
        assert_eq!(std::fs::metadata(dir.join("data")).unwrap().len(), 1 << 30);
        assert_eq!(
            std::fs::metadata(dir.join("meta")).unwrap().len(),
            MIN_META_BYTES
        );

        let (out, calls) = run();
        assert!(out.contains("is there; nothing to do"), "{out}");
        assert_eq!(calls.lines().count(), 1, "{calls}");

        // Reboot: the pool, the loop devices and /run are gone, the files stay.
        for entry in std::fs::read_dir(&state).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        std::fs::remove_file(&snapshotter).unwrap();
        let (out, calls) = run();
        assert!(out.contains("created on"), "{out}");
        assert!(
            !calls.contains("dd "),
            "metadata must survive a reboot: {calls}"
        );
        assert!(!calls.contains("truncate"), "{calls}");
        assert_eq!(std::fs::read_to_string(&snapshotter).unwrap(), config);

        // Half a pool is not guessed at, and the snapshotter is not configured meanwhile.
        std::fs::remove_file(state.join("pool")).unwrap();
        std::fs::remove_file(dir.join("meta")).unwrap();
        let out = std::process::Command::new("bash")
            .arg(&script_path)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to guess"));
        assert!(!snapshotter.exists(), "configured without a pool");
    }
}
