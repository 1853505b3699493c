//! The JetStream relay against a real NATS server the test starts itself:
//! every acknowledged write is in the feed exactly once and in JetStream at
//! least once, in order, through a NATS restart and a SIGKILL of crm.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crm::proto::account_service_client::AccountServiceClient;
use crm::proto::change_service_client::ChangeServiceClient;
use crm::proto::*;
use tonic::transport::Channel;

use crate::helpers::free_port;
use crate::helpers::*;
use crate::reliability::{Process, ScratchDb};

/// A private nats-server with JetStream, on its own port and store.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nats {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("crm-nats-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = Self {
            child: None,
            port: free_port(),
            dir,
        };
        nats.up();
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start");
    }

    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates accounts until `stop`, returning the ids of those acknowledged.
async fn writer(grpc: String, token: String, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut acked = Vec::new();
    let Ok(channel) = Channel::from_shared(grpc).unwrap().connect().await else {
        return acked;
    };
    let mut c = AccountServiceClient::new(channel);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        match c
            .create_account(authed(
                &token,
                CreateAccountRequest {
                    account: Some(Account {
                        name: format!("n{i}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
        {
            Ok(a) => acked.push(a.into_inner().id),
            // The server died under us: whatever was not acknowledged may or
            // may not be stored; only acknowledged writes are promised.
            Err(_) => break,
        }
    }
    acked
}

/// Runs four writers for `millis`, then returns what they got acknowledged.
async fn write_for(p: &Process, token: &str, millis: u64) -> Vec<String> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(writer(p.grpc.clone(), token.to_owned(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(millis)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked
}

#[tokio::test]
async fn the_relay_loses_nothing_through_a_nats_restart_and_a_crash() {
    let mut nats = Nats::start();
    let db = ScratchDb::new();
    let tenant_id = "acme.eu";
    let token = crm::auth::mint(SECRET.as_bytes(), tenant_id, "u", None, 3600, None, None).unwrap();
    // Quiet: nobody reads the process's log, and a full pipe would stall it.
    let url = nats.url();
    let env = [("CRM_NATS_URL", url.as_str()), ("RUST_LOG", "warn")];

    let p = Process::start(&db.0, &env);
    p.ready().await;
    let mut acked = write_for(&p, &token, 700).await;
    // NATS goes away; writes go on; NATS comes back.
    nats.down();
    acked.extend(write_for(&p, &token, 700).await);
    nats.up();
    // crm is SIGKILLed while the writers are busy, and started again.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(writer(p.grpc.clone(), token.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.signal("-KILL");
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    drop(p);
    let p = Process::start(&db.0, &env);
    p.ready().await;
    acked.extend(write_for(&p, &token, 500).await);
    assert!(acked.len() > 100, "{} writes", acked.len());

    // The feed: every acknowledged write exactly once, gapless (read once
    // the sequencer has caught up with the last writes).
    let ch = Channel::from_shared(p.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut feed: Vec<ChangeEvent> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let after = feed.last().map_or(0, |e| e.sequence);
        let page = ChangeServiceClient::new(ch.clone())
            .list_changes(authed(
                &token,
                ListChangesRequest {
                    after_sequence: after,
                    page_size: 1000,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let empty = page.changes.is_empty();
        feed.extend(page.changes);
        if empty {
            let ids: std::collections::HashSet<&str> =
                feed.iter().map(|e| e.record_id.as_str()).collect();
            if acked.iter().all(|id| ids.contains(id.as_str()))
                || tokio::time::Instant::now() > deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (i, e) in feed.iter().enumerate() {
        assert_eq!(e.sequence, i as i64 + 1);
    }
    let created: std::collections::HashMap<&str, usize> =
        feed.iter().fold(Default::default(), |mut m, e| {
            *m.entry(e.record_id.as_str()).or_default() += 1;
            m
        });
    for id in &acked {
        assert_eq!(created.get(id.as_str()), Some(&1), "{id} in the feed once");
    }
    let n = feed.len() as i64;

    // JetStream: every event at least once, in order.
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut relayed = Vec::new();
    loop {
        let mut stream = js.get_stream("CRM_CHANGES").await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        relayed.clear();
        for seq in 1..=last {
            let msg = stream.get_raw_message(seq).await.unwrap();
            assert_eq!(msg.subject.as_str(), "crm.changes.acme~eu.account");
            let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            let sequence: i64 = body["sequence"].as_str().unwrap().parse().unwrap();
            let id = body["id"].as_str().unwrap().to_owned();
            let header = msg
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .unwrap_or_default();
            assert_eq!(header, id);
            relayed.push(sequence);
        }
        if relayed.iter().max().copied().unwrap_or(0) >= n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "relayed {} of {n}",
            relayed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // In order: repeats (a batch published again after a crash) only go
    // back to what was already there; the first sightings are 1..=n.
    let mut seen = 0;
    let mut firsts = Vec::new();
    for s in &relayed {
        if *s > seen {
            assert_eq!(*s, seen + 1, "{relayed:?}");
            seen = *s;
            firsts.push(*s);
        }
    }
    assert_eq!(firsts, (1..=n).collect::<Vec<_>>());
}

/// Every message of the stream: (subject, body).
async fn relayed_messages(js: &async_nats::jetstream::Context) -> Vec<(String, String)> {
    let mut stream = js.get_stream("CRM_CHANGES").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        // Deleted messages leave holes.
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push((
                msg.subject.to_string(),
                String::from_utf8_lossy(&msg.payload).into_owned(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn an_erased_record_leaves_no_relayed_message_holding_its_values() {
    let nats = Nats::start();
    let url = nats.url();
    let app = spawn_app_with(|c| c.nats_url = Some(url)).await;
    let tenant = tenant();
    let t = app.token(&tenant, "ada");
    let dpo = app.scoped_token(&tenant, "dpo", "crm:purge");
    let marker = format!("zq{}", ulid::Ulid::generate().to_string().to_lowercase());
    let account = app.account(&t, "Acme").await;
    let contact = app
        .contact(
            &t,
            Contact {
                first_name: "Jo".into(),
                last_name: format!("Doe {marker}"),
                account_id: account.id.clone(),
                ..Default::default()
            },
        )
        .await;
    let deal = app
        .deal(
            &t,
            Deal {
                account_id: account.id.clone(),
                name: "Big".into(),
                contact_ids: vec![contact.id.clone()],
                ..Default::default()
            },
        )
        .await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !relayed_messages(&js)
        .await
        .iter()
        .any(|(_, b)| b.contains(&deal.id))
    {
        assert!(tokio::time::Instant::now() < deadline, "nothing relayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        relayed_messages(&js)
            .await
            .iter()
            .any(|(_, b)| b.contains(&marker))
    );
    let held = crate::history::survivors_in(&app, &tenant, &marker, Some(&nats.url()));
    assert!(
        held.iter().any(|l| l.contains("stream:CRM_CHANGES")),
        "{held:?}"
    );

    crm::proto::erasure_service_client::ErasureServiceClient::new(app.channel.clone())
        .purge_record(authed(
            &dpo,
            PurgeRecordRequest {
                collection: "contacts".into(),
                id: contact.id.clone(),
                cascade: false,
            },
        ))
        .await
        .unwrap();
    // The purged event is relayed after the messages holding the record
    // are gone.
    loop {
        let all = relayed_messages(&js).await;
        if all.iter().any(|(_, b)| b.contains("\"purged\"")) {
            let holding: Vec<&(String, String)> =
                all.iter().filter(|(_, b)| b.contains(&marker)).collect();
            assert!(holding.is_empty(), "{holding:#?}");
            assert_eq!(
                crate::history::survivors_in(&app, &tenant, &marker, Some(&nats.url())),
                Vec::<String>::new()
            );
            // The deal's later event (the id taken out of contact_ids) is
            // relayed, clean.
            assert!(all.iter().any(|(s, b)| s.ends_with(".deal")
                && b.contains(&deal.id)
                && !b.contains(&contact.id)));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "purged not relayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
