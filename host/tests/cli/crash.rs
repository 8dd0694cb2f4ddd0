//! Crash safety: `rulehost serve` is killed with SIGKILL while several
//! clients lock and unlock; after a restart every acknowledged operation is
//! there, nothing unacknowledged is half there, the audit chain verifies,
//! and the timed locks still expire.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CLIENTS: usize = 4;
const CYCLES: usize = 3;

/// One HTTP/1.1 request on a fresh connection: the status and body, or the
/// I/O error of a server that went away.
fn request(
    address: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}

fn get_json(address: &str, path: &str, token: &str) -> Value {
    let (status, body) = request(address, "GET", path, token, None).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn start(db: &Path, address: &str, clock: &str) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_rulehost"))
        .args([
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            address,
            "--clock",
            clock,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(address, "GET", "/healthz", "", None).is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// What a client did to one member: the operations answered 200, in order,
/// and the one in flight when the server died.
#[derive(Default, Clone)]
struct Member {
    acknowledged: Vec<&'static str>,
    in_flight: Option<&'static str>,
}

#[test]
fn acknowledged_locks_survive_sigkill_and_unacknowledged_ones_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let address = super::free_address();
    let mut acknowledged_total = 0;
    let mut in_flight_total = 0;
    let mut token = String::new();

    for cycle in 0..CYCLES {
        // Each cycle starts a month after the last, on a manual clock.
        let clock = format!("2027-{:02}-01T10:00:00Z", 1 + cycle);
        let mut server = start(&db, &address, &clock);
        if token.is_empty() {
            let output = Command::new(env!("CARGO_BIN_EXE_rulehost"))
                .args([
                    "token",
                    "--db",
                    db.to_str().unwrap(),
                    "--operator",
                    "demo-gym",
                    "--name",
                    "crash",
                ])
                .output()
                .unwrap();
            token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        }

        // Clients lock and unlock members of their own until the server dies.
        let dead = Arc::new(AtomicBool::new(false));
        let members: Arc<Mutex<Vec<(String, Member)>>> = Arc::default();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (address, token, dead, members) = (address.clone(), token.clone(), dead.clone(), members.clone());
                std::thread::spawn(move || {
                    for n in 0.. {
                        let id = format!("c{cycle}-k{client}-m{n}");
                        let mut member = Member::default();
                        for op in ["lock", "unlock"] {
                            let body = if op == "lock" {
                                json!({ "actor": { "kind": "staff", "id": "anna" }, "reason": "payment_deferral", "duration": "14_days" })
                            } else {
                                json!({ "actor": { "kind": "staff", "id": "anna" }, "reason": "paid" })
                            };
                            let path = format!("/v1/operators/demo-gym/subjects/customer/{id}/{op}");
                            // Every other member stays locked, for the expiry check.
                            if op == "unlock" && n % 2 == 1 {
                                break;
                            }
                            match request(&address, "POST", &path, &token, Some(&body)) {
                                Ok((200, _)) => member.acknowledged.push(op),
                                Ok((status, body)) if !dead.load(Ordering::SeqCst) => panic!("{op} {id}: {status} {body}"),
                                _ => {
                                    member.in_flight = Some(op);
                                    members.lock().unwrap().push((id, member));
                                    return;
                                }
                            }
                        }
                        members.lock().unwrap().push((id, member));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(700 + 300 * cycle as u64));
        dead.store(true, Ordering::SeqCst);
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        for client in clients {
            client.join().unwrap();
        }

        let mut server = start(&db, &address, &clock);
        let members = members.lock().unwrap().clone();
        let mut still_locked = Vec::new();
        for (id, member) in &members {
            let export = get_json(
                &address,
                &format!("/v1/operators/demo-gym/subjects/customer/{id}/export"),
                &token,
            );
            let locks = export["locks"].as_array().unwrap();
            let events: Vec<&str> = export["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["kind"].as_str().unwrap())
                .collect();
            let decisions = export["audit"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["kind"] == "decision")
                .count();
            let lifted = locks.iter().filter(|l| !l["lifted"].is_null()).count();
            // The operations that took effect: the acknowledged ones and,
            // wholly or not at all, the one in flight.
            let applied = locks.len() + lifted;
            let acked = member.acknowledged.len();
            assert!(
                applied == acked || (member.in_flight.is_some() && applied == acked + 1),
                "{id}: acknowledged {:?}, in flight {:?}, found {} lock(s), {lifted} lifted",
                member.acknowledged,
                member.in_flight,
                locks.len()
            );
            // Each applied operation has its decision and its event, no more.
            assert_eq!(decisions, applied, "{id}: audit records");
            assert_eq!(events.len(), applied, "{id}: events {events:?}");
            if locks.len() > lifted {
                still_locked.push(id.clone());
            }
            acknowledged_total += acked;
            in_flight_total += usize::from(member.in_flight.is_some());
        }
        assert!(
            members.iter().any(|(_, m)| !m.acknowledged.is_empty()),
            "cycle {cycle} acknowledged nothing"
        );

        let (status, verified) = request(
            &address,
            "POST",
            "/v1/operators/demo-gym/audit/verify",
            &token,
            Some(&json!({})),
        )
        .unwrap();
        assert_eq!(status, 200);
        let verified: Value = serde_json::from_str(&verified).unwrap();
        assert_eq!(verified["intact"], true, "{verified}");

        // The timed locks still expire: fifteen days on, none is left.
        let admin_output = Command::new(env!("CARGO_BIN_EXE_rulehost"))
            .args([
                "token",
                "--db",
                db.to_str().unwrap(),
                "--admin",
                "--name",
                "crash-admin",
            ])
            .output()
            .unwrap();
        let admin = String::from_utf8(admin_output.stdout)
            .unwrap()
            .trim()
            .to_owned();
        let (status, moved) = request(
            &address,
            "POST",
            "/v1/clock",
            &admin,
            Some(&json!({ "advance_seconds": 15 * 86_400 })),
        )
        .unwrap();
        assert_eq!(status, 200, "{moved}");
        for id in &still_locked {
            let state = get_json(
                &address,
                &format!("/v1/operators/demo-gym/subjects/customer/{id}"),
                &token,
            );
            assert_eq!(
                state["state"]["locks"],
                json!([]),
                "{id} is still locked after its end"
            );
        }
        assert!(
            !still_locked.is_empty(),
            "cycle {cycle} left timed locks to expire"
        );
        server.kill().unwrap();
        server.wait().unwrap();
    }
    eprintln!(
        "crash safety: {CYCLES} SIGKILL cycles, {acknowledged_total} acknowledged operations checked, {in_flight_total} in flight at the kill"
    );
}
