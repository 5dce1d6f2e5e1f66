//! `make bench` (node agent part): the product binary's `node-agent install --once` on a real
//! containerd 2.4 node with the pinned runsc, restarting containerd through systemd's D-Bus
//! API (a stand-in for systemd on a real `dbus-daemon`). Measures the first install on a
//! fresh node and repeated runs on the provisioned node: wall time from process start to
//! handler verified, containerd restarts, peak RSS (GNU time's maximum resident set size,
//! from the kernel's rusage), and the node agent image's content.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sandbox_image as image;
use sandbox_testenv::dbus::{FakeSystemd, SystemBus};
use sandbox_testenv::node::{BINARY_PATH, Flavor, TestNode};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Benchmark the node agent on a local containerd with the pinned runsc")]
struct Args {
    /// Runs on the already-provisioned node.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The product binary; default: next to this one.
    #[arg(long)]
    binary: Option<PathBuf>,
}

struct Run {
    elapsed: Duration,
    restarts: usize,
    max_rss_kb: u64,
}

/// One `install --once` under GNU time; the restarts are counted by the systemd stand-in.
fn run_once(
    binary: &Path,
    node: &TestNode,
    source: &Path,
    config: &Path,
    systemd: &FakeSystemd,
) -> Result<Run, Error> {
    let rusage = tempfile::NamedTempFile::new()?;
    let before = systemd.calls().len();
    let started = Instant::now();
    // NODE_AGENT_PROFILER (e.g. `heaptrack -o /tmp/agent`) runs the agent under a profiler.
    let profiler = std::env::var("NODE_AGENT_PROFILER").unwrap_or_default();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(rusage.path())
        .args(profiler.split_whitespace())
        .arg(binary)
        .args(["node-agent", "install", "--once", "--log-level=error"])
        .arg(format!("--host-root={}", node.root().display()))
        .arg(format!("--binary-path={BINARY_PATH}"))
        .arg(format!("--config-dir={}", config.display()))
        .arg(format!("--source-dir={}", source.display()))
        .output()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "node-agent failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let max_rss_kb = std::fs::read_to_string(rusage.path())?
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()?;
    Ok(Run {
        elapsed,
        restarts: systemd.calls().len() - before,
        max_rss_kb,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    if !Path::new("/usr/bin/time").exists() {
        return Err("GNU time (/usr/bin/time) is missing; hack/prereqs.sh installs it".into());
    }
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("gardener-extension-runtime-sandbox"),
    };
    let gvisor = sandbox_testenv::Tool::Gvisor.path()?;
    let work = tempfile::tempdir()?;

    // The image's folder (binaries + SHA256SUMS) and the pool's ConfigMap.
    let source = work.path().join("image");
    sandbox_testenv::images::write_gvisor_payload(&gvisor, &[], &source)?;
    let config = work.path().join("config");
    std::fs::create_dir_all(&config)?;
    // The default image: its tag names the pinned gVisor version.
    let image =
        sandbox_runtime::image::ImageVector::parse(sandbox_runtime::image::DEFAULT_IMAGE_VECTOR)?
            .find(sandbox_runtime::image::NODE_AGENT_IMAGE)?
            .reference();
    let plan = sandbox_runtime::gvisor::node_plan(&Default::default(), &image);
    std::fs::write(
        config.join(sandbox_runtime::node_plan::FILE_NAME),
        plan.to_yaml(),
    )?;

    let node = Arc::new(TestNode::new(Flavor::V2)?);
    node.start()?;
    let bus = SystemBus::start(&node.path("/run/dbus/system_bus_socket"))?;
    let systemd = FakeSystemd::for_node(&bus, node.clone()).await?;

    println!(
        "node agent: {} (containerd 2.4, pinned), {} runs on the provisioned node",
        binary.display(),
        args.runs
    );
    // The agent runs blocking; the systemd stand-in keeps serving on the runtime meanwhile.
    let setup = Arc::new((binary.clone(), node.clone(), source, config, systemd));
    let run = || {
        let setup = setup.clone();
        tokio::task::spawn_blocking(move || {
            let (binary, node, source, config, systemd) = &*setup;
            run_once(binary, node, source, config, systemd)
        })
    };
    let first = run().await??;
    println!(
        "first install on a fresh node: {:.0} ms to verified, {} containerd restart(s), peak RSS {:.1} MiB",
        ms(first.elapsed),
        first.restarts,
        first.max_rss_kb as f64 / 1024.0
    );
    let mut runs = Vec::new();
    for _ in 0..args.runs {
        runs.push(run().await??);
    }
    let mut times: Vec<f64> = runs.iter().map(|r| ms(r.elapsed)).collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let restarts: usize = runs.iter().map(|r| r.restarts).sum();
    let rss = runs.iter().map(|r| r.max_rss_kb).max().unwrap_or_default();
    println!(
        "provisioned node, start to verified: median {:.0} ms, p90 {:.0} ms, max {:.0} ms; containerd restarts in {} runs: {}; peak RSS {:.1} MiB",
        pct(0.5),
        pct(0.9),
        times.last().copied().unwrap_or_default(),
        runs.len(),
        restarts,
        rss as f64 / 1024.0
    );

    // The image that carries all of it.
    let arch = image::Arch::host().ok_or("no image architecture for this machine")?;
    let archive = sandbox_testenv::images::gvisor_agent_image(
        "bench/node-agent:1",
        &[(arch, &binary, &gvisor)],
    )?;
    let size = |path: &Path| std::fs::metadata(path).map(|m| m.len()).unwrap_or_default();
    println!(
        "node agent image: {:.1} MB uncompressed archive (agent binary {:.1} MB, runsc {:.1} MB, containerd-shim-runsc-v1 {:.1} MB, C libraries and SHA256SUMS the rest)",
        archive.len() as f64 / 1e6,
        size(&binary) as f64 / 1e6,
        size(&gvisor.join("runsc")) as f64 / 1e6,
        size(&gvisor.join("containerd-shim-runsc-v1")) as f64 / 1e6,
    );
    Ok(())
}
