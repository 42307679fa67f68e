//! `GET /v1/stream` over a real socket: log positions as SSE ids, resume with
//! `Last-Event-ID` without a gap, heartbeats, and the `lagged` close of a
//! client that does not read.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::StatusCode;
use secbus::{Event, EventType, Publisher, TenantId};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::support::{Harness, login_failed};
use crate::gateway::api_key::Role;

/// One SSE frame as a client sees it.
#[derive(Debug, Default, Clone)]
pub(super) struct Frame {
    pub(super) id: Option<String>,
    event: Option<String>,
    data: String,
    comment: bool,
}

/// A minimal HTTP/1.1 + SSE client: chunked decoding and SSE framing, so the
/// test sees the bytes a browser's EventSource would.
pub(super) struct SseClient {
    socket: TcpStream,
    raw: Vec<u8>,
    body: Vec<u8>,
    ended: bool,
}

impl SseClient {
    pub(super) async fn open(
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, SseClient) {
        SseClient::open_with(addr, path_and_query, headers, None).await
    }

    async fn open_with(
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> (u16, SseClient) {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let mut socket = socket.connect(addr).await.unwrap();
        let mut request = format!(
            "GET {path_and_query} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\nconnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut client = SseClient {
            socket,
            raw: Vec::new(),
            body: Vec::new(),
            ended: false,
        };
        let head_end = loop {
            if let Some(i) = find(&client.raw, b"\r\n\r\n") {
                break i;
            }
            assert!(
                client.read_more().await,
                "the server closed before its headers"
            );
        };
        let head = String::from_utf8_lossy(&client.raw[..head_end]).to_string();
        client.raw.drain(..head_end + 4);
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        if status == 200 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "{head}"
            );
        } else {
            client.ended = true;
        }
        (status, client)
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match self.socket.read(&mut buf).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves whole chunks from `raw` to `body`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let need = line_end + 2 + size + 2;
            if self.raw.len() < need {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..need);
        }
    }

    /// The next frame, or `None` when the stream ended or `wait` passed.
    async fn next(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.dechunk();
            if let Some(end) = find(&self.body, b"\n\n") {
                let text = String::from_utf8_lossy(&self.body[..end]).to_string();
                self.body.drain(..end + 2);
                return Some(parse_frame(&text));
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(true) => {}
                Ok(false) => {
                    self.ended = true;
                }
                Err(_) => return None,
            }
        }
    }

    /// The next `n` event frames (comments skipped).
    pub(super) async fn events(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        while out.len() < n {
            let frame = self
                .next(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("only {} of {n} events came: {out:?}", out.len()));
            if !frame.comment {
                out.push(frame);
            }
        }
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_frame(text: &str) -> Frame {
    let mut frame = Frame::default();
    let mut data = Vec::new();
    for line in text.lines() {
        if line.starts_with(':') {
            frame.comment = true;
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => frame.id = Some(value.to_owned()),
                "event" => frame.event = Some(value.to_owned()),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
    }
    frame.data = data.join("\n");
    frame
}

pub(super) async fn serve(h: &Harness) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = h.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

pub(super) fn event_id(frame: &Frame) -> String {
    let event: Value = serde_json::from_str(&frame.data).unwrap();
    event["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_exactly_what_it_missed() {
    let h = Harness::on("embedded:{dir}/bus", |c| {
        c.rate_limit.events_per_second = 0.0
    })
    .await;
    let addr = serve(&h).await;
    let read_key = h.key("acme", Role::Read).to_owned();
    let bearer = format!("Bearer {read_key}");
    let auth = [("authorization", bearer.as_str())];

    let (status, _) = SseClient::open(addr, "/v1/stream", &[]).await;
    assert_eq!(status, 401);
    let publish_only = format!("Bearer {}", h.key("acme", Role::Publish));
    let (status, _) =
        SseClient::open(addr, "/v1/stream", &[("authorization", &publish_only)]).await;
    assert_eq!(status, 403);

    let (status, mut client) = SseClient::open(addr, "/v1/stream", &auth).await;
    assert_eq!(status, 200);
    // (id, log position) of each acme event published; the position is the
    // engine's, so another tenant's events leave gaps in acme's numbers.
    let mut acme: Vec<(String, String)> = Vec::new();
    let publish = |tenant: &'static str, user: String| {
        let e = login_failed(&user, "203.0.113.9");
        let h = &h;
        async move {
            let answer = h.publish(tenant, &e).await;
            assert_eq!(answer.status, StatusCode::ACCEPTED);
            (
                e["id"].as_str().unwrap().to_owned(),
                answer.body["sequence"].to_string(),
            )
        }
    };
    let seen = |frames: &[Frame]| -> Vec<(String, String)> {
        frames
            .iter()
            .map(|f| (event_id(f), f.id.clone().unwrap()))
            .collect()
    };
    for i in 0..3 {
        acme.push(publish("acme", format!("u{i}")).await);
        // Another tenant's events never reach acme's stream.
        publish("globex", format!("g{i}")).await;
    }
    let first = client.events(3).await;
    assert_eq!(seen(&first), acme);
    drop(client);

    for i in 0..4 {
        acme.push(publish("acme", format!("m{i}")).await);
    }
    let resume = [
        ("authorization", bearer.as_str()),
        ("last-event-id", acme[2].1.as_str()),
    ];
    let (status, mut client) = SseClient::open(addr, "/v1/stream", &resume).await;
    assert_eq!(status, 200);
    let again = client.events(4).await;
    assert_eq!(seen(&again), acme[3..7], "exactly the missed ones");
    acme.push(publish("acme", "live".to_owned()).await);
    let next = client.events(1).await;
    assert_eq!(
        seen(&next),
        acme[7..8],
        "no duplicate, no gap after the catch-up"
    );

    // EventSource cannot set headers: the key and the position go in the query.
    let path = format!(
        "/v1/stream?api_key={read_key}&last_event_id={}&type=auth.login.failed",
        acme[5].1
    );
    let (status, mut client) = SseClient::open(addr, &path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(seen(&client.events(2).await), acme[6..8]);
    let (status, _) = SseClient::open(addr, "/v1/stream?last_event_id=abc", &auth).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats() {
    let h = Harness::on("embedded:{dir}/bus", |c| c.stream.heartbeat_secs = 1).await;
    let addr = serve(&h).await;
    let bearer = format!("Bearer {}", h.key("acme", Role::Read));
    let (status, mut client) =
        SseClient::open(addr, "/v1/stream", &[("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let frame = client
            .next(Duration::from_secs(3))
            .await
            .expect("a heartbeat within 3 s");
        assert!(frame.comment && frame.id.is_none(), "{frame:?}");
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_closed_with_lagged_and_can_resume() {
    let h = Harness::on("embedded:{dir}/bus", |c| c.stream.buffer_events = 8).await;
    let addr = serve(&h).await;
    let bearer = format!("Bearer {}", h.key("acme", Role::Read));
    let auth = [("authorization", bearer.as_str())];
    let (status, mut slow) = SseClient::open_with(addr, "/v1/stream", &auth, Some(4096)).await;
    assert_eq!(status, 200);

    // Far more than the socket buffers and the stream buffer hold together.
    let total = 20_000;
    let tenant = TenantId::new("acme").unwrap();
    let padding = "x".repeat(1000);
    for chunk in 0..total / 1000 {
        let events: Vec<Event> = (0..1000)
            .map(|i| {
                Event::builder(EventType::new("auth.login.failed").unwrap(), tenant.clone())
                    .source("idp/test")
                    .data(
                        json!({"user": format!("u{chunk}-{i}"), "src_ip": "203.0.113.9",
                                 "reason": "bad_password", "user_agent": padding}),
                    )
                    .build()
                    .unwrap()
            })
            .collect();
        h.bus.publish_batch(events).await.unwrap();
    }

    // Now read: what was buffered, then the lagged notice, then the end.
    let mut received = Vec::new();
    let lagged = loop {
        let frame = slow
            .next(Duration::from_secs(20))
            .await
            .expect("a frame or lagged");
        if frame.comment {
            continue;
        }
        if frame.event.as_deref() == Some("lagged") {
            break frame;
        }
        received.push(frame.id.unwrap().parse::<u64>().unwrap());
    };
    assert!(
        received.len() < total,
        "the stream was cut, not buffered: {}",
        received.len()
    );
    assert!(
        received.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap before the cut"
    );
    let notice: Value = serde_json::from_str(&lagged.data).unwrap();
    let last = received.last().copied();
    assert_eq!(
        notice["last_event_id"]
            .as_str()
            .map(|s| s.parse::<u64>().unwrap()),
        last
    );
    assert!(
        slow.next(Duration::from_secs(5)).await.is_none(),
        "the server closed the stream"
    );

    let resume_from = last.unwrap_or(0).to_string();
    let resume = [
        ("authorization", bearer.as_str()),
        ("last-event-id", resume_from.as_str()),
    ];
    let (status, mut again) = SseClient::open(addr, "/v1/stream", &resume).await;
    assert_eq!(status, 200);
    let next = again.events(1).await;
    assert_eq!(
        next[0].id.as_deref(),
        Some((last.unwrap_or(0) + 1).to_string().as_str())
    );
}

#[tokio::test]
async fn a_stream_carries_only_its_type_subject_and_correlation() {
    let h = Harness::with(|c| c.rate_limit.events_per_second = 0.0).await;
    let addr = serve(&h).await;
    let bearer = format!("Bearer {}", h.key("acme", Role::Read));
    let auth = [("authorization", bearer.as_str())];
    let root = login_failed("bob", "203.0.113.9");
    let root_id = root["id"].as_str().unwrap().to_owned();
    let mut streams = Vec::new();
    for path in [
        "/v1/stream?subject=user/eve".to_owned(),
        format!("/v1/stream?correlationid={root_id}"),
        "/v1/stream?type=auth.login.succeeded".to_owned(),
    ] {
        let (status, client) = SseClient::open(addr, &path, &auth).await;
        assert_eq!(status, 200, "{path}");
        streams.push(client);
    }
    let eve = login_failed("eve", "198.51.100.1");
    let child = super::support::login_succeeded_after(&root, "bob");
    let other_eve = login_failed("eve", "198.51.100.2");
    for e in [&root, &eve, &child, &other_eve] {
        assert_eq!(h.publish("acme", e).await.status, StatusCode::ACCEPTED);
    }
    let ids = |e: &[&Value]| -> Vec<String> {
        e.iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let expected = [
        ids(&[&eve, &other_eve]),
        ids(&[&root, &child]),
        ids(&[&child]),
    ];
    for (client, want) in streams.iter_mut().zip(expected) {
        let got: Vec<String> = client
            .events(want.len())
            .await
            .iter()
            .map(event_id)
            .collect();
        assert_eq!(got, want);
        let more = client.next(Duration::from_millis(300)).await;
        assert!(
            more.as_ref().is_none_or(|f| f.comment),
            "nothing else: {more:?}"
        );
    }
}
