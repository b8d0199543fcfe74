//! `mlgate-rls --listen 127.0.0.1:PORT --redis redis://127.0.0.1:PORT --config FILE`

use clap::Parser;
use mlgate_core::{Environment, Gateway};
use mlgate_remote::Resolver;
use mlgate_rls::service::{Counters, RateLimitServiceServer, Service, Stripes};
use mlgate_rls::store::Redis;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// mlgate's fleet-wide limit store: an Envoy rate limit service (RLS v3) over Redis, running
/// the filter's own limit code against the same configuration.
#[derive(Parser)]
#[command(name = "mlgate-rls", version)]
struct Args {
    /// Address to serve gRPC (HTTP/2 cleartext) on.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Redis URL (redis://host:port[/db]).
    #[arg(long, value_name = "URL")]
    redis: String,
    /// The mlgate configuration (the same JSON as the filter's plugin configuration).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// --redis lists seed nodes of a Redis Cluster (comma-separated URLs).
    #[arg(long)]
    redis_cluster: bool,
    /// Bound on connecting to Redis and on each Redis reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    redis_timeout_ms: u64,
}

/// The service never sends a request upstream, so it needs no backend API key: any
/// `api_key_env` resolves to a placeholder instead of being required in its environment.
struct NoSecrets;

impl Environment for NoSecrets {
    fn var(&self, _name: &str) -> Option<String> {
        Some("unused-by-mlgate-rls".to_string())
    }
}

async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    let args = Args::parse();
    let bytes = match std::fs::read(&args.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mlgate-rls: cannot read {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let gateway = match Gateway::from_json(&bytes, &NoSecrets) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("mlgate-rls: {e}");
            return ExitCode::from(2);
        }
    };
    let redis = match Redis::new(&args.redis, Duration::from_millis(args.redis_timeout_ms.max(1)), args.redis_cluster) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("mlgate-rls: --redis {}: {e}", args.redis);
            return ExitCode::from(2);
        }
    };
    // The configuration lives as long as the process.
    let gateway: &'static Gateway = Box::leak(Box::new(gateway));
    let resolver = Arc::new(Resolver::new(gateway));
    let counters = Arc::new(Counters::default());
    let service = Service { resolver, redis, counters: counters.clone(), stripes: Arc::new(Stripes::new(256)) };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mlgate-rls: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listen = args.listen;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        eprintln!(
            "mlgate-rls: serving {} on {listen}, {} subscriptions, Redis {}",
            mlgate_remote::SERVICE,
            gateway.subscriptions.len(),
            args.redis
        );
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(RateLimitServiceServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown())
            .await
            .map_err(std::io::Error::other)
    });
    eprintln!(
        "mlgate-rls: stopped; {} requests, {} over limit, {} bad requests, {} store errors",
        counters.requests.load(Ordering::Relaxed),
        counters.over_limit.load(Ordering::Relaxed),
        counters.bad_requests.load(Ordering::Relaxed),
        counters.store_errors.load(Ordering::Relaxed)
    );
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mlgate-rls: {e}");
            ExitCode::FAILURE
        }
    }
}
