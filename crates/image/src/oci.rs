//! OCI image archives (an OCI image layout in a tar, which `ctr images import`, registries'
//! tools and `skopeo` read), written from local files: entries carry mtime 0 and a fixed
//! order, so the same files give the same bytes and the same digests.
//!
//! The three JSON documents (config, manifest, index) are written with `serde_json::json!`,
//! whose maps are sorted, rather than with the `oci-spec` crate. `oci-spec` would give the
//! same bytes (its `HashMap` annotations go through a sorted map when serialised with
//! `serde_json::to_value`), but it is a large dependency for three small documents, and its
//! builders add nothing to what the tests check: that `ctr`, containerd and the registry
//! read what we write.

use std::io::Write;
use std::path::Path;

use sandbox_runtime::manifests::sha256_hex;

use crate::arch::Arch;
use crate::{Error, Result, io_err, tar_err};

/// One entry of an image layer.
#[derive(Clone, Debug)]
pub enum Entry {
    Dir(String),
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// The uncompressed layer tar of `entries`, in their order.
pub fn layer(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                layer.append_data(&mut header, path, std::io::empty())
            }
            Entry::File {
                path,
                content,
                mode,
            } => {
                header.set_mode(*mode);
                header.set_size(content.len() as u64);
                layer.append_data(&mut header, path, content.as_slice())
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                layer.append_link(&mut header, path, target)
            }
        }
        .map_err(tar_err)?;
    }
    layer.into_inner().map_err(tar_err)
}

/// One architecture's variant of an image: its one layer and its configuration.
#[derive(Clone, Debug)]
pub struct PlatformImage {
    pub arch: Arch,
    pub entries: Vec<Entry>,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// The user (`uid:gid`) its processes run as unless the pod says otherwise.
    pub user: Option<String>,
}

/// The manifest of `image` and the blobs it refers to (layer, config).
fn manifest(image: &PlatformImage) -> Result<(Vec<u8>, [Vec<u8>; 2])> {
    let layer = layer(&image.entries)?;
    let layer_digest = sha256_hex(&layer);
    let mut image_config = serde_json::json!({"Entrypoint": image.entrypoint, "Env": image.env});
    if let Some(user) = &image.user {
        image_config["User"] = serde_json::json!(user);
    }
    let config = serde_json::json!({
        "architecture": image.arch.oci(),
        "os": "linux",
        "config": image_config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_digest}"), "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    Ok((manifest, [layer, config]))
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The descriptor of `blob` (of `media_type`), with the platform of `arch` when given.
fn descriptor(media_type: &str, blob: &[u8], arch: Option<Arch>) -> serde_json::Value {
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(blob)),
        "size": blob.len(),
    });
    if let Some(arch) = arch {
        descriptor["platform"] = serde_json::json!({"architecture": arch.oci(), "os": "linux"});
    }
    descriptor
}

/// `index.json` naming `descriptor` `name`, as `ctr images import` and OCI tools read it.
fn named_index(name: &str, mut descriptor: serde_json::Value) -> Vec<u8> {
    descriptor["annotations"] = serde_json::json!({
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name,
    });
    serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [descriptor]})
        .to_string()
        .into_bytes()
}

/// The OCI layout as a tar: `oci-layout`, `index.json`, then the blobs in the given order.
fn layout(index: &[u8], blobs: &[&[u8]]) -> Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    let mut file = |path: String, content: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(0);
        archive.append_data(&mut header, path, content)
    };
    file("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(tar_err)?;
    file("index.json".into(), index).map_err(tar_err)?;
    for blob in blobs {
        file(format!("blobs/sha256/{}", sha256_hex(blob)), blob).map_err(tar_err)?;
    }
    let mut bytes = archive.into_inner().map_err(tar_err)?;
    bytes.flush().map_err(tar_err)?;
    Ok(bytes)
}

/// An image archive named `name` for this machine's architecture, with one layer of
/// `entries`, `entrypoint` and `env` (the test nodes' images).
pub fn archive(
    name: &str,
    entries: &[Entry],
    entrypoint: &[&str],
    env: &[&str],
) -> Result<Vec<u8>> {
    let arch = Arch::host().ok_or_else(|| {
        Error::Libraries(format!(
            "this machine's architecture {} is not one we build images for",
            std::env::consts::ARCH
        ))
    })?;
    let image = PlatformImage {
        arch,
        entries: entries.to_vec(),
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
        user: None,
    };
    let (manifest, [layer, config]) = manifest(&image)?;
    let index = named_index(name, descriptor(MANIFEST, &manifest, Some(arch)));
    layout(&index, &[&layer, &config, &manifest])
}

/// A multi-architecture image archive named `name`: `index.json` names one image index,
/// which lists one manifest per platform (what registries serve and `ctr images import`,
/// `skopeo` or `crane` read). Platforms appear in the given order.
pub fn multi_arch_archive(name: &str, images: &[PlatformImage]) -> Result<Vec<u8>> {
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    for image in images {
        let (manifest, [layer, config]) = manifest(image)?;
        manifests.push(descriptor(MANIFEST, &manifest, Some(image.arch)));
        blobs.extend([layer, config, manifest]);
    }
    let image_index =
        serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
            .to_string()
            .into_bytes();
    let index = named_index(name, descriptor(INDEX, &image_index, None));
    blobs.push(image_index);
    layout(&index, &blobs.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// The digest an archive's `index.json` names (its image index, or its one manifest): what
/// a registry serves the image under, and what `repository@<digest>` pins.
pub fn index_digest(archive: &[u8]) -> Result<String> {
    use std::io::Read;
    let bad = |what: &str| Error::Archive(std::io::Error::other(what.to_string()));
    for entry in tar::Archive::new(archive)
        .entries()
        .map_err(Error::Archive)?
    {
        let mut entry = entry.map_err(Error::Archive)?;
        if entry.path().map_err(Error::Archive)?.as_os_str() != "index.json" {
            continue;
        }
        let mut text = Vec::new();
        entry.read_to_end(&mut text).map_err(Error::Archive)?;
        let index: serde_json::Value =
            serde_json::from_slice(&text).map_err(|_| bad("index.json is not JSON"))?;
        return index["manifests"][0]["digest"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| bad("index.json names no manifest"));
    }
    Err(bad("the archive has no index.json"))
}

/// Writes an image archive to `out` (creating its folder) and prints what was written.
pub fn write_archive(out: &Path, name: &str, archive: &[u8], archs: &[Arch]) -> Result<()> {
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    std::fs::write(out, archive).map_err(io_err(out))?;
    println!(
        "{}: {name} for {} ({:.1} MB, sha256 {})",
        out.display(),
        archs
            .iter()
            .map(|a| format!("linux/{a}"))
            .collect::<Vec<_>>()
            .join(", "),
        archive.len() as f64 / 1e6,
        &sha256_hex(archive)[..16]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(arch: Arch, text: &str) -> PlatformImage {
        PlatformImage {
            arch,
            entries: vec![
                Entry::Dir("etc".into()),
                Entry::File {
                    path: "etc/hello".into(),
                    content: text.as_bytes().to_vec(),
                    mode: 0o644,
                },
                Entry::Symlink {
                    path: "hello".into(),
                    target: "etc/hello".into(),
                },
            ],
            entrypoint: vec!["/hello".into()],
            env: vec!["PATH=/".into()],
            user: Some("65532:65532".into()),
        }
    }

    fn files(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        use std::io::Read;
        tar::Archive::new(archive)
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, data)
            })
            .collect()
    }

    #[test]
    fn the_index_digest_names_the_image_index_blob() {
        let images = [image(Arch::Amd64, "a"), image(Arch::Arm64, "b")];
        let archive = multi_arch_archive("registry.local/x:v1", &images).unwrap();
        let digest = index_digest(&archive).unwrap();
        let blob = files(&archive)
            .into_iter()
            .find(|(p, _)| *p == format!("blobs/sha256/{}", digest.trim_start_matches("sha256:")))
            .expect("the digest's blob is in the archive");
        assert_eq!(
            format!("sha256:{}", sandbox_runtime::manifests::sha256_hex(&blob.1)),
            digest
        );
        assert!(index_digest(b"not a tar").is_err());
    }

    #[test]
    fn same_files_same_bytes() {
        let images = [image(Arch::Amd64, "a"), image(Arch::Arm64, "b")];
        let a = multi_arch_archive("registry.local/x:v1", &images).unwrap();
        assert_eq!(
            a,
            multi_arch_archive("registry.local/x:v1", &images).unwrap()
        );
        let other = multi_arch_archive("registry.local/x:v2", &images).unwrap();
        assert_ne!(a, other, "the name is in index.json");
    }

    #[test]
    fn the_layout_names_every_blob_by_its_digest() {
        let archive =
            multi_arch_archive("registry.local/x:v1", &[image(Arch::Amd64, "a")]).unwrap();
        let files = files(&archive);
        assert_eq!(files[0].0, "oci-layout");
        assert_eq!(files[1].0, "index.json");
        for (path, data) in &files[2..] {
            assert_eq!(path, &format!("blobs/sha256/{}", sha256_hex(data)));
        }
        let index: serde_json::Value = serde_json::from_slice(&files[1].1).unwrap();
        assert_eq!(index["manifests"][0]["mediaType"], INDEX);
        assert_eq!(
            index["manifests"][0]["annotations"]["io.containerd.image.name"],
            "registry.local/x:v1"
        );
    }

    #[test]
    fn layers_carry_no_time_and_no_owner() {
        let layer = layer(&image(Arch::Amd64, "a").entries).unwrap();
        for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let header = entry.unwrap().header().clone();
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
        }
    }
}
