//! `admission-bench`: the Shoot admission webhook's latency under concurrent reviews.
//!
//! The webhook's routes (the code the `admission` subcommand serves) on a local port, the
//! CloudProfile from `example/garden/cloudprofile.yaml` served from memory (a real webhook
//! reads it from the garden's API server, whose latency is not ours), and `--concurrency`
//! clients on kept-alive connections (as an API server keeps its connections to a webhook)
//! each sending AdmissionReviews of the example Shoot, a third of them invalid, one after the
//! other. Prints p50/p99/max per review and the throughput. Plain HTTP: TLS costs a handshake
//! per connection, which kept-alive connections pay once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use sandbox_api::CloudProfile;
use sandbox_api::shoot::CloudProfileReference;
use sandbox_runtime::admission::Rules;
use sandbox_webhook::admission::{CloudProfiles, Context, Metrics, router};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
struct Args {
    /// Reviews in flight at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Reviews each client sends.
    #[arg(long, default_value_t = 200)]
    reviews_per_client: usize,
}

struct Fixed(CloudProfile);

impl CloudProfiles for Fixed {
    async fn get(
        &self,
        _: &CloudProfileReference,
        _: &str,
    ) -> Result<Option<CloudProfile>, String> {
        Ok(Some(self.0.clone()))
    }
}

fn yaml(path: &str) -> Result<Value, Error> {
    let text = std::fs::read_to_string(sandbox_testenv::repo_root().join(path))?;
    Ok(serde_saphyr::from_str(&text)?)
}

fn review(shoot: &Value, uid: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("bench-{uid}"),
            "kind": {"group": "core.gardener.cloud", "version": "v1beta1", "kind": "Shoot"},
            "resource": {"group": "core.gardener.cloud", "version": "v1beta1", "resource": "shoots"},
            "name": shoot["metadata"]["name"],
            "namespace": shoot["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": shoot,
            "dryRun": false,
        }
    }))
    .unwrap_or_default()
}

/// One HTTP/1.1 POST on a kept-alive connection; the response body.
async fn post(
    stream: &mut BufReader<tokio::net::TcpStream>,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        sandbox_webhook::admission::PATH,
        body.len()
    );
    // One write, as an API server sends a request (two small writes would meet Nagle's
    // algorithm and delayed ACKs: 40 ms of nothing per review).
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.get_mut().write_all(&request).await?;
    let mut length = 0;
    let mut line = String::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse()?;
        }
    }
    let mut response = vec![0; length];
    stream.read_exact(&mut response).await?;
    Ok(response)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let profile: CloudProfile = serde_json::from_value(yaml("example/garden/cloudprofile.yaml")?)?;
    let valid = yaml("example/garden/shoot.yaml")?;
    let mut invalid = valid.clone();
    invalid["spec"]["provider"]["workers"][0]["cri"]["containerRuntimes"][0]["providerConfig"]["configFlags"]
        ["platform"] = json!("ptrace");
    let context = Arc::new(Context {
        profiles: Fixed(profile),
        rules: Rules::default(),
        metrics: Metrics::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    // TCP_NODELAY as the webhook server sets it on its connections (tls.rs).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router(context)).await });

    let bodies = Arc::new([review(&valid, 0), review(&invalid, 1)]);
    let started = Instant::now();
    let mut clients = Vec::new();
    for client in 0..args.concurrency {
        let bodies = bodies.clone();
        let count = args.reviews_per_client;
        clients.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(address).await?;
            tcp.set_nodelay(true)?;
            let mut stream = BufReader::new(tcp);
            let mut latencies = Vec::with_capacity(count);
            let mut denied = 0;
            for i in 0..count {
                let body = &bodies[usize::from((client + i) % 3 == 0)];
                let sent = Instant::now();
                let response = post(&mut stream, body).await?;
                latencies.push(sent.elapsed());
                let answer: Value = serde_json::from_slice(&response)?;
                if answer["response"]["allowed"] == false {
                    denied += 1;
                }
            }
            Ok::<_, Error>((latencies, denied))
        }));
    }
    let mut latencies = Vec::new();
    let mut denied = 0;
    for client in clients {
        let (l, d) = client.await??;
        latencies.extend(l);
        denied += d;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let total = latencies.len();
    println!(
        "admission reviews: {total} ({denied} denied) from {} concurrent clients in {:.2} s: {:.0} reviews/s",
        args.concurrency,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency per review: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[total - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
