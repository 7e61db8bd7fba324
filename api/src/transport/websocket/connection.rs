//! One WebSocket connection: the protocol's state machine, its operations, keepalive and the
//! session it runs under.
//!
//! One task per connection. It reads client messages, runs `connection_init`'s authentication
//! concurrently with reading (so a `subscribe` sent before `connection_ack` is refused 4401, as
//! the protocol says, rather than queued), polls every running operation's stream, pings the
//! peer, and re-checks the session. Operations are streams polled here, not tasks: cancelling
//! one (`complete`, the socket closing) drops it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Request, Response, Variables};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{self, AbortHandle, Abortable, BoxStream, SelectAll};
use futures_util::{FutureExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, interval_at, sleep};

use super::messages::{
    ClientMessage, LegacyBad, Operation, Protocol, close_reason, encode, encode_serialized,
    error_payload, parse_legacy, parse_transport_ws,
};
use super::sockets::{Holder, OperationSlot, Slot, Sockets};
use crate::auth::session::ClientInfo;
use crate::auth::{AuthVia, RequestAuth, Viewer, bearer_token};
use crate::calls::CallEvent;
use crate::error::AppError;
use crate::graphql::completions::{DeltaLane, Handoff, join_waiting};
use crate::graphql::limits::DocumentLimits;
use crate::graphql::{AppSchema, OverWebSocket, request_data};
use crate::state::AppState;

/// How long one frame may wait for the peer to take it before the peer counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long operations already running may go on once the session ended.
const DRAIN_AFTER_SESSION_END: Duration = Duration::from_secs(60);

/// Close codes (graphql-ws's `CloseCode`, and RFC 6455's).
mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
    pub const INTERNAL_SERVER_ERROR: u16 = 4500;
}

/// How a connection ends: with a close frame, by answering the peer's, or by dropping a peer
/// that is gone.
enum End {
    Close(u16, String),
    PeerClosed,
    Gone,
}

fn close(code: u16, reason: impl Into<String>) -> End {
    End::Close(code, reason.into())
}

/// `connection_init`'s check: the viewer boxed, like [`OpEvent`]'s response.
type InitFuture = Pin<Box<dyn Future<Output = Result<Option<Box<Viewer>>, InitRefused>> + Send>>;

enum InitRefused {
    /// The token does not resolve to a live session.
    Forbidden,
    Internal(AppError),
}

/// An event of one running operation.
struct OpEvent {
    id: String,
    seq: u64,
    item: OpItem,
}

enum OpItem {
    /// A response of async-graphql's. (Boxed: the connection's future holds room for one
    /// event, and each idle socket pays for it.)
    Response(Box<Response>),
    /// A `completionStream` delta's message, made from the operation's template. (A `Box<str>`
    /// rather than a `String`, to keep the event small, as above.)
    Rendered(Box<str>),
    /// The operation's responses ended.
    Ended,
}

struct RunningOp {
    seq: u64,
    abort: AbortHandle,
    /// Offered to the operation's `completionStream` (see [`DeltaLane`]), and the stop of its
    /// deltas once taken.
    lane: Option<DeltaLane>,
    deltas: Option<AbortHandle>,
    /// Counts it among the process's running operations (a metric) while it lives.
    _counted: OperationSlot,
    /// Whether anything was sent for it yet.
    answered: bool,
}

/// The operations running on a connection, by the client's id.
#[derive(Default)]
struct Operations {
    by_id: HashMap<String, RunningOp>,
    streams: SelectAll<BoxStream<'static, OpEvent>>,
    next_seq: u64,
}

impl Operations {
    fn start(
        &mut self,
        id: String,
        responses: BoxStream<'static, Response>,
        counted: OperationSlot,
        lane: Option<DeltaLane>,
    ) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let (abort, registration) = AbortHandle::new_pair();
        let tagged = {
            let id = id.clone();
            responses.map(move |response| OpEvent {
                id: id.clone(),
                seq,
                item: OpItem::Response(Box::new(response)),
            })
        };
        let ended = stream::once({
            let id = id.clone();
            async move {
                OpEvent {
                    id,
                    seq,
                    item: OpItem::Ended,
                }
            }
        });
        self.streams
            .push(Abortable::new(tagged, registration).chain(ended).boxed());
        self.by_id.insert(
            id,
            RunningOp {
                seq,
                abort,
                lane,
                deltas: None,
                answered: false,
                _counted: counted,
            },
        );
    }

    /// Stop an operation; nothing more is sent for it.
    fn cancel(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(op) => {
                op.abort.abort();
                if let Some(deltas) = op.deltas {
                    deltas.abort();
                }
                true
            }
            None => false,
        }
    }

    fn current(&mut self, id: &str, seq: u64) -> Option<&mut RunningOp> {
        self.by_id.get_mut(id).filter(|op| op.seq == seq)
    }
}

/// One connection's state.
pub(super) struct Connection {
    state: AppState,
    schema: AppSchema,
    /// The server's document checks (and the documents that passed them).
    limits: Arc<DocumentLimits>,
    sockets: Arc<Sockets>,
    /// The upgrade request's address and user agent (each operation's).
    client: ClientInfo,
    /// Who the connection runs for: the upgrade's cookie's user until `connection_init`
    /// decides.
    viewer: Option<Viewer>,
    /// The process's and the client network's counts of this socket.
    _slots: [Slot; 2],
    user_slot: Option<Slot>,
    ops: Operations,
    /// When the session was last found alive.
    checked_at: Instant,
    /// Set when the session ended while operations were running.
    session_ended_at: Option<Instant>,
    /// The server is shutting down: no new operation, close when the running ones end.
    closing: bool,
}

async fn send_close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: close_reason(reason).into(),
    };
    if !send_frame(socket, Message::Close(Some(frame))).await {
        return;
    }
    // Wait a moment for the peer's close frame, so it sees a clean close and not a reset.
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

impl Connection {
    pub(super) fn new(
        state: AppState,
        schema: AppSchema,
        limits: Arc<DocumentLimits>,
        sockets: Arc<Sockets>,
        auth: RequestAuth,
        slots: [Slot; 2],
        user_slot: Option<Slot>,
    ) -> Self {
        Connection {
            viewer: auth.viewer,
            state,
            schema,
            limits,
            sockets,
            client: auth.client,
            _slots: slots,
            user_slot,
            ops: Operations::default(),
            checked_at: Instant::now(),
            session_ended_at: None,
            closing: false,
        }
    }

    /// Close a socket that will not be served (no acceptable subprotocol), still counted
    /// against the socket limits until it is closed.
    pub(super) async fn refuse(self: Box<Self>, mut socket: WebSocket, code: u16, reason: &str) {
        send_close(&mut socket, code, reason).await;
        drop(self);
    }

    /// Serve the socket. Boxed: the connection's task holds this future for the socket's life,
    /// so what it holds by value is paid per idle socket (each async layer keeps its own copy of
    /// what it was given).
    pub(super) async fn run(mut self: Box<Self>, mut socket: WebSocket, protocol: Protocol) {
        let end = self.serve(&mut socket, protocol).await;
        // Running operations stop here (a call's task sees its receiver go and is metered).
        self.ops = Operations::default();
        match end {
            End::Close(code, reason) => send_close(&mut socket, code, &reason).await,
            // The close reply is queued by the WebSocket layer; send it before dropping.
            End::PeerClosed => {
                let _ = tokio::time::timeout(CLOSE_WAIT, futures_util::SinkExt::flush(&mut socket))
                    .await;
            }
            End::Gone => {}
        }
    }

    async fn serve(&mut self, socket: &mut WebSocket, protocol: Protocol) -> End {
        let config = Arc::clone(&self.state.config);
        let cfg = &config.websocket;
        // Boxed, and dropped once `connection_init` arrived: an idle socket keeps neither.
        let mut init_deadline = Some(Box::pin(sleep(cfg.init_timeout)));
        let mut init_received = false;
        let mut acknowledged = false;
        let mut init: Option<InitFuture> = None;
        // Legacy `start`s that arrive while `connection_init` is being checked run after it.
        let mut waiting: Vec<(String, Operation)> = Vec::new();
        let mut keepalive = interval_at(Instant::now() + cfg.keepalive, cfg.keepalive);
        let mut session_check = interval_at(Instant::now() + cfg.session_check, cfg.session_check);
        // After a long wait elsewhere in the loop, one tick, not a burst of them (a burst would
        // judge the peer silent while its pongs wait unread).
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // These two wait on structures every socket shares (a waiter list, a broadcast's tail):
        // made once and kept across the loop's turns, their waits stay registered, instead of
        // being registered and removed under a shared lock on every message sent.
        let sockets = Arc::clone(&self.sockets);
        let closing = sockets.closing();
        let revocations =
            futures_util::stream::unfold(self.state.auth.revocations(), |mut rx| async {
                let revoked = rx.recv().await;
                Some((revoked, rx))
            });
        tokio::pin!(closing, revocations);
        let mut last_heard = Instant::now();

        loop {
            tokio::select! {
                message = socket.recv() => {
                    let text = match message {
                        Some(Ok(Message::Text(t))) => t.to_string(),
                        Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
                            Ok(t) => t,
                            Err(_) if protocol == Protocol::TransportWs => {
                                return close(code::BAD_REQUEST, "Invalid message received");
                            }
                            Err(_) => {
                                send(socket, encode("connection_error", None, Some(json!({"message": "invalid message"})))).await;
                                continue;
                            }
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            last_heard = Instant::now();
                            continue;
                        }
                        Some(Ok(Message::Close(_))) => return End::PeerClosed,
                        Some(Err(_)) | None => return End::Gone,
                    };
                    last_heard = Instant::now();
                    let parsed = match protocol {
                        Protocol::TransportWs => match parse_transport_ws(&text) {
                            Ok(m) => m,
                            Err(_) => return close(code::BAD_REQUEST, "Invalid message received"),
                        },
                        Protocol::Legacy => match parse_legacy(&text) {
                            Ok(m) => m,
                            Err(LegacyBad::Json) => {
                                if !send(socket, encode("connection_error", None, Some(json!({"message": "the message is not JSON"})))).await {
                                    return End::Gone;
                                }
                                continue;
                            }
                            Err(LegacyBad::Message(id)) => {
                                if !send(socket, encode("error", id.as_deref(), Some(json!({"message": "Invalid message type!"})))).await {
                                    return End::Gone;
                                }
                                continue;
                            }
                        },
                    };
                    match parsed {
                        ClientMessage::Init(payload) => {
                            if init_received {
                                if protocol == Protocol::Legacy {
                                    send(socket, encode("connection_error", None, Some(json!({"message": "Too many initialisation requests"})))).await;
                                }
                                return close(code::TOO_MANY_INITS, "Too many initialisation requests");
                            }
                            init_received = true;
                            init_deadline = None;
                            // (`self.viewer` is still the cookie's: only this init's result
                            // replaces it, and a second init closes the connection.)
                            init = Some(authenticate(self.state.clone(), self.viewer.clone(), payload).boxed());
                        }
                        // (Only graphql-transport-ws has ping: a legacy `ping` is an unknown
                        // type, answered by `parse_legacy`'s error above.)
                        ClientMessage::Ping(payload) => {
                            if !send(socket, encode("pong", None, payload.map(Value::Object))).await {
                                return End::Gone;
                            }
                        }
                        ClientMessage::Pong => {}
                        ClientMessage::Subscribe { id, operation } => {
                            if protocol == Protocol::TransportWs {
                                if !acknowledged {
                                    return close(code::UNAUTHORIZED, "Unauthorized");
                                }
                                if self.ops.by_id.contains_key(&id) {
                                    return close(code::SUBSCRIBER_EXISTS, format!("Subscriber for {id} already exists"));
                                }
                            } else {
                                if init.is_some() {
                                    if waiting.len() < cfg.max_operations {
                                        waiting.push((id, operation));
                                    } else if !send(socket, Self::too_many_operations(protocol, &id, cfg.max_operations)).await {
                                        return End::Gone;
                                    }
                                    continue;
                                }
                                // The legacy protocol replaces an operation whose id is reused.
                                self.ops.cancel(&id);
                            }
                            // (Boxed, as below: inline, each idle socket would hold room for it.)
                            if let Some(end) = Box::pin(self.subscribe(socket, protocol, id, operation)).await {
                                return end;
                            }
                        }
                        ClientMessage::Complete { id } => {
                            // Unknown or finished ids are ignored; nothing is sent back.
                            self.ops.cancel(&id);
                            if let Some(end) = self.end_if_drained() {
                                return end;
                            }
                        }
                        ClientMessage::Terminate => {
                            // Answers already there (a query answered at once) go out before
                            // the close: a `start` then a `connection_terminate` in one write get
                            // the query's answer, however this loop's branches were ordered.
                            while let Some(Some(event)) = self.ops.streams.next().now_or_never() {
                                if let Some(text) = self.encode_event(protocol, event) && !send(socket, text).await {
                                    return End::Gone;
                                }
                            }
                            return close(code::NORMAL, "terminated");
                        }
                    }
                }
                result = async { init.as_mut().expect("guarded").await }, if init.is_some() => {
                    init = None;
                    match result {
                        Ok(viewer) => {
                            if let Some(end) = self.adopt(viewer.map(|v| *v), cfg) {
                                if protocol == Protocol::Legacy {
                                    send(socket, encode("connection_error", None, Some(json!({"message": "too many connections for this user"})))).await;
                                }
                                return end;
                            }
                            acknowledged = true;
                            if !send(socket, encode("connection_ack", None, None)).await {
                                return End::Gone;
                            }
                            if protocol == Protocol::Legacy {
                                if !send(socket, encode("ka", None, None)).await {
                                    return End::Gone;
                                }
                                for (id, operation) in std::mem::take(&mut waiting) {
                                    self.ops.cancel(&id);
                                    if let Some(end) = Box::pin(self.subscribe(socket, protocol, id, operation)).await {
                                        return end;
                                    }
                                }
                            }
                        }
                        Err(refused) => {
                            let (code, reason) = match refused {
                                InitRefused::Forbidden => (code::FORBIDDEN, "Forbidden"),
                                InitRefused::Internal(e) => {
                                    tracing::error!(error = ?e, "WebSocket connection_init failed");
                                    (code::INTERNAL_SERVER_ERROR, "Internal server error")
                                }
                            };
                            return match protocol {
                                Protocol::TransportWs => close(code, reason),
                                Protocol::Legacy => {
                                    send(socket, encode("connection_error", None, Some(json!({"message": reason})))).await;
                                    close(code::INTERNAL, reason)
                                }
                            };
                        }
                    }
                }
                () = &mut closing, if !self.closing => {
                    // Server shutdown: close once the running operations end (calls get the
                    // shutdown grace period, then are stopped and finalised).
                    self.closing = true;
                    if self.ops.by_id.is_empty() {
                        return close(code::GOING_AWAY, "server shutting down");
                    }
                }
                () = async { init_deadline.as_mut().expect("guarded").await }, if init_deadline.is_some() => {
                    return close(code::INIT_TIMEOUT, "Connection initialisation timeout");
                }
                Some(event) = self.ops.streams.next(), if !self.ops.streams.is_empty() => {
                    if let Some(text) = self.encode_event(protocol, event) && !send(socket, text).await {
                        return End::Gone;
                    }
                    if let Some(end) = self.end_if_drained() {
                        return end;
                    }
                }
                _ = keepalive.tick() => {
                    if last_heard.elapsed() > cfg.keepalive * 2 {
                        tracing::debug!("WebSocket peer silent for two keepalive intervals: dropped");
                        return End::Gone;
                    }
                    if self.session_ended_at.is_some_and(|t| t.elapsed() > DRAIN_AFTER_SESSION_END) {
                        return close(code::FORBIDDEN, "Forbidden");
                    }
                    if !send_frame(socket, Message::Ping(Default::default())).await {
                        return End::Gone;
                    }
                    if protocol == Protocol::Legacy && acknowledged && !send(socket, encode("ka", None, None)).await {
                        return End::Gone;
                    }
                }
                _ = session_check.tick(), if self.viewer.is_some() && self.session_ended_at.is_none() => {
                    if !self.session_alive().await && let Some(end) = self.session_ended() {
                        return end;
                    }
                }
                Some(revoked) = revocations.next(), if self.viewer.is_some() && self.session_ended_at.is_none() => {
                    let ours = match revoked {
                        Ok(session_id) => self.viewer.as_ref().is_some_and(|v| v.session.id == session_id),
                        // Missed some: look the session up.
                        Err(RecvError::Lagged(_)) => !self.session_alive().await,
                        Err(RecvError::Closed) => false,
                    };
                    if ours && let Some(end) = self.session_ended() {
                        return end;
                    }
                }
            }
        }
    }

    /// The session ended: close now if nothing runs, else once running operations end.
    fn session_ended(&mut self) -> Option<End> {
        self.session_ended_at.get_or_insert_with(Instant::now);
        self.end_if_drained()
    }

    fn end_if_drained(&self) -> Option<End> {
        if !self.ops.by_id.is_empty() {
            return None;
        }
        if self.session_ended_at.is_some() {
            return Some(close(code::FORBIDDEN, "Forbidden"));
        }
        self.closing
            .then(|| close(code::GOING_AWAY, "server shutting down"))
    }

    /// Take the caller `connection_init` authenticated (counting the socket against them).
    fn adopt(
        &mut self,
        viewer: Option<Viewer>,
        cfg: &crate::config::WebSocketConfig,
    ) -> Option<End> {
        let same_user = match (&viewer, &self.viewer) {
            (Some(a), Some(b)) => a.user.id == b.user.id,
            _ => false,
        };
        if viewer.is_none() && self.user_slot.is_none() {
            // Sockets without a signed-in user have a cap of their own, so they cannot crowd out
            // signed-in users under WS_MAX_SOCKETS.
            match self
                .sockets
                .take(Holder::Anonymous, cfg.max_anonymous_sockets)
            {
                Some(slot) => self.user_slot = Some(slot),
                None => {
                    return Some(close(
                        code::TRY_AGAIN_LATER,
                        "too many connections without sign-in",
                    ));
                }
            }
        }
        if !same_user && viewer.is_some() {
            self.user_slot = None;
            if let Some(v) = &viewer {
                match self
                    .sockets
                    .take(Holder::User(v.user.id.clone()), cfg.max_sockets_per_user)
                {
                    Some(slot) => self.user_slot = Some(slot),
                    None => {
                        return Some(close(
                            code::TRY_AGAIN_LATER,
                            "too many connections for this user",
                        ));
                    }
                }
            }
        }
        self.viewer = viewer;
        self.checked_at = Instant::now();
        None
    }

    /// Whether the connection's session is still live (a database error counts as live: the
    /// next check decides).
    async fn session_alive(&mut self) -> bool {
        let Some(viewer) = &self.viewer else {
            return true;
        };
        match crate::auth::session::is_live(&self.state.db, &viewer.session.id, &viewer.user.id)
            .await
        {
            Ok(true) => {
                self.checked_at = Instant::now();
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(error = ?e, "WebSocket session check failed; kept for now");
                true
            }
        }
    }

    /// The in-band refusal of one operation for the per-socket limit.
    fn too_many_operations(protocol: Protocol, id: &str, max: usize) -> String {
        refusal(
            protocol,
            id,
            &format!("at most {max} operations may run at once on one connection"),
            "RATE_LIMITED",
            Some(1),
        )
    }

    /// Start an operation; `Some` ends the connection.
    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        protocol: Protocol,
        id: String,
        operation: Operation,
    ) -> Option<End> {
        let cfg = &self.state.config.websocket;
        if self.closing {
            // Shutting down: nothing new starts (the socket closes once running ones end).
            let refused = refusal(
                protocol,
                &id,
                "the server is shutting down",
                "SERVICE_UNAVAILABLE",
                Some(5),
            );
            let sent = send(socket, refused).await;
            return (!sent).then_some(End::Gone);
        }
        if self.ops.by_id.len() >= cfg.max_operations {
            let max = cfg.max_operations;
            return (!send(socket, Self::too_many_operations(protocol, &id, max)).await)
                .then_some(End::Gone);
        }
        // Every operation runs under a live session: re-read when the last look is stale.
        let stale = self.checked_at.elapsed() >= cfg.session_check;
        if self.viewer.is_some()
            && (self.session_ended_at.is_some() || (stale && !self.session_alive().await))
        {
            let refused = refusal(
                protocol,
                &id,
                &AppError::Unauthenticated.message(),
                "UNAUTHENTICATED",
                None,
            );
            send(socket, refused).await;
            if protocol == Protocol::Legacy {
                send(
                    socket,
                    encode(
                        "connection_error",
                        None,
                        Some(json!({"message": "Forbidden"})),
                    ),
                )
                .await;
            }
            return Some(close(code::FORBIDDEN, "Forbidden"));
        }
        let mut request = Request::new(operation.query);
        if let Some(name) = operation.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = operation.variables {
            request = request.variables(Variables::from_json(variables));
        }
        let (operation, refused) = self.limits.prepare(&mut request);
        let mut lane = None;
        let responses = match refused {
            Some(refused) => futures_util::stream::once(async move { refused }).boxed(),
            None => {
                let (mut data, batches) = request_data(
                    &self.state,
                    self.viewer.clone(),
                    None, // the viewer is as old as the connection: loaders read the profile
                    self.client.clone(),
                    None,
                );
                data.insert(OverWebSocket);
                // (Not with exported traces: their extension records each event's execution.)
                if !crate::telemetry::exporting() && one_root_field(&mut request) {
                    let offered = DeltaLane::default();
                    data.insert(offered.clone());
                    lane = Some(offered);
                }
                request.data = data;
                batches.drive(self.schema.execute_stream(request)).boxed()
            }
        };
        let responses = operation.stream(responses);
        self.ops
            .start(id, responses, self.sockets.operation(), lane);
        None
    }

    /// The message for one operation event, if anything is to be sent for it.
    fn encode_event(&mut self, protocol: Protocol, event: OpEvent) -> Option<String> {
        let OpEvent { id, seq, item } = event;
        match item {
            OpItem::Response(response) => {
                let Some(op) = self.ops.current(&id, seq) else {
                    return None; // cancelled
                };
                let first = !op.answered;
                op.answered = true;
                // Errors before execution (parse, validation, choosing the operation) carry
                // no path: the protocol's `error`, which ends the operation.
                let refused = first
                    && protocol == Protocol::TransportWs
                    && !response.errors.is_empty()
                    && response.data == async_graphql::Value::Null
                    && response.errors.iter().all(|e| e.path.is_empty());
                if refused {
                    self.ops.cancel(&id);
                    let payload = serde_json::to_value(&response.errors).unwrap_or(Value::Null);
                    return Some(encode("error", Some(&id), Some(payload)));
                }
                let ty = match protocol {
                    Protocol::TransportWs => "next",
                    Protocol::Legacy => "data",
                };
                let serialised = encode_serialized(ty, Some(&id), Some(&*response));
                // The operation's `completionStream` handed its deltas over: its first event
                // is their template, not sent (`DeltaLane`). Only a clean one is: errors or
                // extensions would be repeated in every delta. (Neither happens: the event's
                // fields cannot fail, and no extension is registered while a lane is offered.)
                // Without a template the handoff is dropped and an internal error sent instead:
                // the call stops as if its client left, and the resolver's stream reports that it
                // ended unfinalised.
                let handoff = first.then(|| op.lane.take()).flatten();
                let handoff = handoff.as_ref().and_then(DeltaLane::take);
                let clean = response.errors.is_empty() && response.extensions.is_empty();
                match (handoff, serialised) {
                    (Some(handoff), Ok(template)) if clean => {
                        let (stop, registration) = AbortHandle::new_pair();
                        op.deltas = Some(stop);
                        let deltas = Deltas::new(id, seq, &template, handoff);
                        self.ops
                            .streams
                            .push(Abortable::new(deltas, registration).boxed());
                        None
                    }
                    (handoff, serialised) => {
                        let failed = || {
                            let failed = json!({"data": null, "errors": [{"message": "internal error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]});
                            encode(ty, Some(&id), Some(failed))
                        };
                        if handoff.is_some() {
                            // (Its delta is the sentinel: never sent.)
                            tracing::error!(
                                "a completionStream's template was not clean: its deltas are dropped"
                            );
                            return Some(failed());
                        }
                        Some(serialised.unwrap_or_else(|e| {
                            tracing::error!(error = %e, "a response could not be serialised");
                            failed()
                        }))
                    }
                }
            }
            OpItem::Rendered(message) => {
                self.ops.current(&id, seq)?;
                Some(message.into())
            }
            OpItem::Ended => {
                // (Nothing more for a cancelled one.)
                self.ops.current(&id, seq)?;
                self.ops.by_id.remove(&id);
                Some(encode("complete", Some(&id), None))
            }
        }
    }
}

/// Whether the operation `request` runs has one root selection, a field: the only kind of
/// operation offered a [`DeltaLane`], so that its first response is its `completionStream`'s
/// template (with two root fields, the other's could come first). Any other answer (no such
/// operation, a document that failed) offers none, which changes nothing.
fn one_root_field(request: &mut Request) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return false;
    };
    let operation = match (&doc.operations, name) {
        (DocumentOperations::Single(op), None) => op,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().expect("one")
        }
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name.as_str()) {
            Some(op) => op,
            None => return false,
        },
        _ => return false,
    };
    let items = &operation.node.selection_set.node.items;
    operation.node.ty == OperationType::Subscription
        && items.len() == 1
        && matches!(items[0].node, Selection::Field(_))
}

/// A `completionStream`'s deltas, each sent as the operation's template with the delta in the
/// sentinel's place; the call's last event goes back to the resolver (see [`DeltaLane`]).
struct Deltas {
    id: String,
    seq: u64,
    /// The template's text around each place of the sentinel (one more than the places).
    parts: Vec<String>,
    events: tokio::sync::mpsc::UnboundedReceiver<CallEvent>,
    finished: Option<tokio::sync::oneshot::Sender<CallEvent>>,
    /// An event read while joining deltas, for the next turn.
    held: Option<CallEvent>,
}

impl Deltas {
    fn new(id: String, seq: u64, template: &str, handoff: Handoff) -> Self {
        let Handoff {
            sentinel,
            events,
            finished,
        } = handoff;
        // The sentinel needs no escaping, and nothing else in the message can contain it.
        let parts = template
            .split(&format!("\"{sentinel}\""))
            .map(str::to_owned)
            .collect();
        Deltas {
            id,
            seq,
            parts,
            events,
            finished: Some(finished),
            held: None,
        }
    }

    fn render(&self, delta: &str) -> String {
        let quoted = serde_json::to_string(delta).expect("a string serialises");
        let places = self.parts.len() - 1;
        let size = self.parts.iter().map(String::len).sum::<usize>() + places * quoted.len();
        let mut message = String::with_capacity(size);
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                message.push_str(&quoted);
            }
            message.push_str(part);
        }
        message
    }
}

impl futures_util::Stream for Deltas {
    type Item = OpEvent;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<OpEvent>> {
        use std::task::{Poll, ready};
        let event = match self.held.take() {
            Some(event) => event,
            // Ended without its last event (`None`): the resolver's stream reports it.
            None => match ready!(self.events.poll_recv(cx)) {
                Some(event) => event,
                None => return Poll::Ready(None),
            },
        };
        match event {
            CallEvent::Delta(mut delta) => {
                let this = &mut *self;
                this.held = join_waiting(&mut delta, &mut this.events);
                let message = this.render(&delta);
                Poll::Ready(Some(OpEvent {
                    id: this.id.clone(),
                    seq: this.seq,
                    item: OpItem::Rendered(message.into_boxed_str()),
                }))
            }
            last => {
                if let Some(finished) = self.finished.take() {
                    let _ = finished.send(last);
                }
                Poll::Ready(None)
            }
        }
    }
}

/// The in-band refusal of operation `id`: an `error` message with one coded GraphQL error (an
/// array of them on graphql-transport-ws, the error itself on the legacy protocol).
fn refusal(
    protocol: Protocol,
    id: &str,
    message: &str,
    code: &str,
    retry_after: Option<u64>,
) -> String {
    let errors = error_payload(message, code, retry_after);
    let payload = match protocol {
        Protocol::TransportWs => errors,
        Protocol::Legacy => errors[0].clone(),
    };
    encode("error", Some(id), Some(payload))
}

/// Send one text message; false when the peer is gone, or takes nothing for [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, text: String) -> bool {
    send_frame(socket, Message::Text(text.into())).await
}

/// Send one frame, bounded: a peer that stops reading (its receive window full) would otherwise
/// hold the connection, its slots and its running operations forever.
async fn send_frame(socket: &mut WebSocket, frame: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(frame)).await,
        Ok(Ok(()))
    )
}

/// `connection_init`'s authentication: `{"authorization": "Bearer TOKEN"}` must resolve to a
/// live session; without it, the upgrade's cookie (if any) decides.
async fn authenticate(
    state: AppState,
    from_cookie: Option<Viewer>,
    payload: Option<Map<String, Value>>,
) -> Result<Option<Box<Viewer>>, InitRefused> {
    let value = payload.as_ref().and_then(|p| {
        p.get("authorization")
            .or_else(|| p.get("Authorization"))
            .cloned()
    });
    let Some(value) = value else {
        return Ok(from_cookie.map(Box::new));
    };
    let Some(token) = value.as_str().and_then(bearer_token) else {
        return Err(InitRefused::Forbidden);
    };
    match state.auth.viewer(token, AuthVia::Bearer).await {
        Ok(Some(signed_in)) => Ok(Some(Box::new(signed_in.viewer))),
        Ok(None) => Err(InitRefused::Forbidden),
        Err(e) => Err(InitRefused::Internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{Name, Value as GqlValue};
    use futures_util::StreamExt;

    use super::*;

    /// The message a response of `completionStream` makes, with `delta` under two aliases.
    fn message(delta: &str) -> String {
        let event = GqlValue::from_json(json!({ "a": delta, "logId": "1", "b": delta })).unwrap();
        let data = GqlValue::Object([(Name::new("completionStream"), event)].into());
        encode_serialized("next", Some("op"), Some(&Response::new(data))).unwrap()
    }

    #[tokio::test]
    async fn deltas_are_the_template_with_their_text_in_the_sentinels_place() {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (finished, mut back) = tokio::sync::oneshot::channel();
        let sentinel = "delta-lane-0123456789abcdef".to_owned();
        let template = message(&sentinel);
        let handoff = Handoff {
            sentinel,
            events,
            finished,
        };
        let mut deltas = Deltas::new("op".into(), 1, &template, handoff);
        let awkward = [
            "plain",
            "\"quoted\" \\ back\\slash",
            "line\nbreak\ttab\r",
            "\u{0}nul \u{1f} control",
            "ünï©ødé 🦀",
            "</script><!--",
            "",
            "delta-lane-0123456789abcdef",
        ];
        for delta in awkward {
            tx.send(CallEvent::Delta(delta.into())).unwrap();
            let Some(OpEvent {
                id,
                seq: 1,
                item: OpItem::Rendered(text),
            }) = deltas.next().await
            else {
                panic!("a rendered delta");
            };
            assert_eq!(id, "op");
            assert_eq!(&*text, message(delta), "{delta:?}");
        }
        // Deltas waiting together go out as one.
        tx.send(CallEvent::Delta("x".into())).unwrap();
        tx.send(CallEvent::Delta("y".into())).unwrap();
        let Some(OpEvent {
            item: OpItem::Rendered(text),
            ..
        }) = deltas.next().await
        else {
            panic!("a rendered delta");
        };
        assert_eq!(&*text, message("xy"));
        // The call's end goes back to the resolver, and the deltas end.
        let log = entity::prompt_logs::Model {
            id: uuid::Uuid::nil(),
            user_id: "u".into(),
            model: "m".into(),
            prompt: "p".into(),
            completion: Some("xy".into()),
            prompt_tokens: 1,
            completion_tokens: 1,
            latency_ms: Some(1),
            status: entity::prompt_logs::CallStatus::Ok,
            metadata: None,
            created_at: chrono::Utc::now(),
        };
        tx.send(CallEvent::Finished(log)).unwrap();
        assert!(deltas.next().await.is_none());
        assert!(matches!(back.try_recv(), Ok(CallEvent::Finished(_))));
    }

    #[tokio::test]
    async fn deltas_ending_without_the_last_event_drop_its_way_back() {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (finished, mut back) = tokio::sync::oneshot::channel();
        let handoff = Handoff {
            sentinel: "delta-lane-x".into(),
            events,
            finished,
        };
        let mut deltas = Deltas::new("op".into(), 1, &message("delta-lane-x"), handoff);
        drop(tx);
        assert!(deltas.next().await.is_none());
        drop(deltas);
        assert!(matches!(
            back.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Closed)
        ));
    }
}
