//! Every statement the service sends on a request connection carries its
//! tenant: the test servers reach Postgres through [`Capture`], a proxy that
//! reads the frontend protocol (simple `Query` and extended `Parse`
//! messages) of connections that log in as a request role, and flags any
//! statement on a tenant table without `tenant_id = $n` for each table it
//! names. Every API test's server goes through one, and the test fails when
//! its server sent such a statement (see `TestApp`'s drop). Citus needs the
//! predicate to route a statement to one worker, and an outer join without it
//! fails there.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The tables that hold tenants' rows.
const TENANT_TABLES: &str = "accounts|contacts|deals|activities|quotes|line_items|idempotency_keys|number_sequences|change_outbox|change_events|change_heads|change_relay|webhooks|webhook_deliveries|field_definitions|record_history|purge_audit";

/// A capturing proxy in front of a Postgres server.
pub struct Capture {
    pub addr: SocketAddr,
    flagged: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<usize>>,
}

impl Capture {
    /// Listens on 127.0.0.1:0 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let flagged = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(0));
        let (f, s) = (flagged.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (f, s) = (f.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = relay(client, server, f, s).await;
                    }
                });
            }
        });
        Self {
            addr,
            flagged,
            seen,
        }
    }

    /// The statements flagged so far.
    pub fn flagged(&self) -> Vec<String> {
        self.flagged.lock().unwrap().clone()
    }

    /// Forgets what was flagged (after a test that flags on purpose).
    pub fn clear(&self) {
        self.flagged.lock().unwrap().clear();
    }

    /// How many request-role statements passed through.
    pub fn seen(&self) -> usize {
        *self.seen.lock().unwrap()
    }
}

async fn read_message(
    r: &mut (impl AsyncReadExt + Unpin),
    typed: bool,
) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; if typed { 5 } else { 4 }];
    r.read_exact(&mut head).await?;
    let len_at = if typed { 1 } else { 0 };
    let len = u32::from_be_bytes(head[len_at..len_at + 4].try_into().unwrap()) as usize;
    if !(4..=1 << 30).contains(&len) {
        return Err(std::io::Error::other("bad message length"));
    }
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    head.extend_from_slice(&body);
    Ok(head)
}

/// Copies both ways, reading the client's messages on the way.
async fn relay(
    mut client: TcpStream,
    server: TcpStream,
    flagged: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<usize>>,
) -> std::io::Result<()> {
    // Small messages go out at once (no Nagle delay on either leg).
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // Start-up: refuse TLS (so the stream stays readable), then read the
    // user from the startup message.
    let mut startup = read_message(&mut client, false).await?;
    while startup.len() == 8
        && [80877103u32, 80877104].contains(&u32::from_be_bytes(startup[4..8].try_into().unwrap()))
    {
        client.write_all(b"N").await?;
        startup = read_message(&mut client, false).await?;
    }
    let params: Vec<&[u8]> = startup[8..].split(|b| *b == 0).collect();
    let user = params
        .chunks(2)
        .find(|kv| kv[0] == b"user")
        .and_then(|kv| kv.get(1))
        .map(|u| String::from_utf8_lossy(u).into_owned())
        .unwrap_or_default();
    let watched = user.starts_with("crm_app_");
    let (mut server_r, mut server_w) = server.into_split();
    let (client_r, mut client_w) = client.into_split();
    let mut client_r = tokio::io::BufReader::new(client_r);
    server_w.write_all(&startup).await?;
    let back = tokio::spawn(async move { tokio::io::copy(&mut server_r, &mut client_w).await });
    let mut pending = Vec::new();
    loop {
        let message = match read_message(&mut client_r, true).await {
            Ok(m) => m,
            Err(_) => break,
        };
        if watched {
            let sql = match message[0] {
                b'Q' => Some(&message[5..]),
                // Parse: statement name, NUL, query, NUL, ...
                b'P' => message[5..]
                    .iter()
                    .position(|b| *b == 0)
                    .map(|n| &message[5 + n + 1..]),
                _ => None,
            };
            if let Some(sql) = sql {
                let sql =
                    String::from_utf8_lossy(sql.split(|b| *b == 0).next().unwrap_or_default());
                *seen.lock().unwrap() += 1;
                if let Some(problem) = check(&sql) {
                    flagged.lock().unwrap().push(format!("{problem}: {sql}"));
                }
            }
        }
        // What arrived together leaves together (one write, not one per
        // message of a pipelined Parse/Bind/Execute/Sync).
        pending.extend_from_slice(&message);
        if client_r.buffer().is_empty() {
            if server_w.write_all(&pending).await.is_err() {
                break;
            }
            pending.clear();
        }
    }
    back.abort();
    Ok(())
}

/// What is wrong with `sql` (one message, perhaps several statements), if
/// anything: a statement naming tenant tables (after FROM, JOIN, UPDATE,
/// USING or DELETE FROM) with fewer `tenant_id = <parameter or literal>`
/// predicates than tables, or an INSERT into one without its tenant_id.
pub fn check(sql: &str) -> Option<String> {
    use std::sync::LazyLock;
    static READS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(&format!(
            r"(?i)\b(from|join|update|using)\s+(only\s+)?({TENANT_TABLES})\b"
        ))
        .unwrap()
    });
    static INSERTS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(&format!(
            r"(?i)\binsert\s+into\s+({TENANT_TABLES})\b(\s+as\s+\w+)?\s*\(([^)]*)\)"
        ))
        .unwrap()
    });
    static PREDICATES: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r#"(?i)\b(\w+\.)?tenant_id\s*=\s*(\$\d+|'[^']*')"#).unwrap());
    static LITERALS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"'[^']*'").unwrap());
    let sql = sql.replace('"', "");
    for statement in sql.split(';') {
        let code = LITERALS.replace_all(statement, "''");
        let tables = READS.captures_iter(&code).count();
        let predicates = PREDICATES.captures_iter(statement).count();
        if tables > predicates {
            return Some(format!(
                "{tables} tenant table(s) read or written, {predicates} tenant_id predicate(s)"
            ));
        }
        for insert in INSERTS.captures_iter(&code) {
            let columns = insert.get(3).map_or("", |m| m.as_str());
            if !columns.split(',').any(|c| c.trim() == "tenant_id") {
                return Some(format!("an INSERT into {} without tenant_id", &insert[1]));
            }
        }
    }
    None
}

#[test]
fn the_check_flags_a_statement_without_its_tenant() {
    assert!(check("SELECT * FROM accounts WHERE id = $1").is_some());
    assert!(check("SELECT * FROM accounts t WHERE t.tenant_id = $1 AND t.id = $2").is_none());
    assert!(check("UPDATE webhooks SET enabled = false WHERE id = $1").is_some());
    assert!(
        check(
            "SELECT 1 FROM deals d JOIN accounts a ON a.id = d.account_id WHERE d.tenant_id = $1"
        )
        .is_some(),
        "a join carries the tenant for each table"
    );
    assert!(
        check("SELECT 1 FROM deals d JOIN accounts a ON a.tenant_id = $1 AND a.id = d.account_id WHERE d.tenant_id = $1")
            .is_none()
    );
    assert!(check("INSERT INTO accounts (id, name) VALUES ($1, $2)").is_some());
    assert!(check("INSERT INTO accounts (tenant_id, id, name) VALUES ($1, $2, $3)").is_none());
    assert!(check("SET LOCAL crm.tenant_id = 'a'; SELECT t FROM quotes t WHERE t.tenant_id = 'a' AND t.id = 'q'").is_none());
    assert!(check("BEGIN; SET LOCAL crm.sub = 'from accounts'").is_none());
    assert!(check("SELECT count(*) FROM pg_class").is_none());
    assert!(check("DELETE FROM line_items WHERE id = $1").is_some());
}

#[tokio::test]
async fn the_capture_sees_what_a_request_role_sends() {
    let app = crate::helpers::spawn_app().await;
    let token = app.token(&crate::helpers::tenant(), "u");
    app.account(&token, "Acme").await;
    let capture = app.capture.as_ref().expect("the test server is captured");
    assert!(capture.seen() > 0, "statements were captured");
    // A request-role login that sends a statement without its tenant is
    // flagged: the check can fail.
    let url = format!(
        "postgres://{}:{}@{}/{}",
        app.app_role,
        crate::helpers::app_password(),
        capture.addr,
        app.db_name
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM accounts")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(capture.flagged().len(), 1, "{:?}", capture.flagged());
    capture.clear();
}
