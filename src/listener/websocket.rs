//! The WebSocket relay after an upgrade a rule allowed: frames are parsed
//! both ways so that message payloads pass the secret scanner like bodies
//! do (RFC 6455 framing).
//!
//! - A message is one scanner stream across its fragments, so a secret split
//!   over frames is still found. Each frame read (at most
//!   [`MAX_FRAME`] bytes) is sent on as one frame of what the scanner
//!   released; the scanner's held-back tail goes out with the next frame,
//!   the rest with the message's last one. Message boundaries, opcodes and
//!   the client's masking are kept; frame sizes may differ.
//! - Messages of one direction are scanned as one text: the tail of a
//!   message that could still start a secret (at most
//!   [`Scanner::max_hold_back`] bytes, plus the scanner's look-behind
//!   context) is scanned again at the head of the next, so a held value or
//!   a pattern split across messages is found. In `block` mode (outgoing, by
//!   default) that tail, sent as the message's last frame, is held until
//!   the next message shows it completes nothing, or for at most
//!   [`MESSAGE_TAIL_WAIT`]: a secret split across messages sent together
//!   never reaches the origin, not even its first part; one whose second
//!   part comes after the wait had its first part sent, and the connection
//!   closes before the second. In `redact` mode (incoming) messages are not
//!   delayed, and a secret split across messages closes the connection
//!   (code 1008) before its second part: the first cannot be redacted any
//!   more.
//! - Outgoing (client → origin), a finding in `block` mode closes the
//!   connection: the sandbox gets a close frame, code 1008, naming the
//!   pattern id; the origin gets nothing more. Incoming findings are
//!   redacted (or block likewise, if so configured).
//! - What cannot be scanned is refused, never passed: compressed frames
//!   (`permessage-deflate`, which airlock strips from the offer) and frames
//!   over [`MAX_FRAME`] end the connection with a close frame saying why.
//! - Control frames (ping, pong, close) carry up to 125 bytes the peer
//!   reads (a ping is echoed back in a pong): each is scanned on its own,
//!   with the same actions, and may interleave with a message's fragments.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::scan::{FindingSink, ScanMode, ScanState, Scanner};

/// Largest frame payload read whole; bigger frames close the connection
/// (code 1009). Browsers and common clients fragment long before this.
pub(crate) const MAX_FRAME: u64 = 1024 * 1024;

/// The scanner and what to do in each direction.
pub(crate) struct WsScan {
    pub(crate) scanner: std::sync::Arc<Scanner>,
    pub(crate) outgoing: ScanMode,
    pub(crate) incoming: ScanMode,
    pub(crate) outgoing_min: crate::scan::Confidence,
    pub(crate) incoming_min: crate::scan::Confidence,
    pub(crate) out_sink: FindingSink,
    pub(crate) in_sink: FindingSink,
}

/// Why a relay stopped early.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// A secret in block mode (pattern id).
    Blocked(String),
    /// A frame the relay will not pass (close code, reason).
    Refused(u16, &'static str),
}

struct FrameHead {
    fin: bool,
    rsv: u8,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// Relays frames between the sandbox (`client`) and the origin until either
/// side closes, scanning message payloads.
pub(crate) async fn relay<C, U>(client: C, upstream: U, scan: WsScan)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let out = pump(
        &mut cr,
        &mut uw,
        &scan,
        (scan.outgoing, scan.outgoing_min, true),
        &scan.out_sink,
    );
    let inc = pump(
        &mut ur,
        &mut cw,
        &scan,
        (scan.incoming, scan.incoming_min, false),
        &scan.in_sink,
    );
    let stopped = tokio::select! {
        r = out => r,
        r = inc => r,
    };
    let (code, reason) = match &stopped {
        Ok(()) => {
            let _ = cw.shutdown().await;
            let _ = uw.shutdown().await;
            return;
        }
        Err(Stop::Blocked(pattern)) => (
            1008,
            format!("airlock blocked a secret ({pattern}); the message was not sent"),
        ),
        Err(Stop::Refused(code, why)) => (*code, format!("airlock: {why}")),
    };
    tracing::debug!(code, reason = %reason, "WebSocket relay closed by airlock");
    let mut payload = BytesMut::new();
    payload.put_u16(code);
    // A close frame's payload is at most 125 bytes.
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    let _ = cw.write_all(&encode(true, 0x8, None, &payload)).await;
    let _ = cw.shutdown().await;
    let _ = uw.shutdown().await;
}

/// How long the last frame of a message whose tail could start a secret is
/// held, waiting for the next message to tell whether it completes one.
pub(crate) const MESSAGE_TAIL_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// One direction's scanning across messages: the message in progress, the
/// bytes carried over from the one before, and that message's last frame
/// while it is held.
struct Flow<'a> {
    scanner: &'a std::sync::Arc<Scanner>,
    mode: ScanMode,
    /// Least confidence acted on in this direction.
    min: crate::scan::Confidence,
    /// The sandbox's direction ([`ScanState::outgoing`]).
    outgoing: bool,
    sink: &'a FindingSink,
    /// The message in progress.
    message: Option<Message>,
    /// The previous message's unjudged tail (and a little context before
    /// it), rescanned at the head of the next message's stream.
    carry: Vec<u8>,
    /// The previous message's last frame, not yet sent, and until when it
    /// may wait.
    held: Option<(Vec<u8>, tokio::time::Instant)>,
}

/// A data message in progress: its scanner stream (which starts with the
/// carried bytes), its opcode, and whether a frame of it has been sent.
struct Message {
    state: ScanState,
    opcode: u8,
    sent: bool,
    /// Stream bytes carried over from the previous message (already sent).
    carried: u64,
    /// Output bytes still to drop: the carried bytes' own output.
    skip: u64,
    /// The stream's input from `recent_base` on (to carry the tail over).
    recent: Vec<u8>,
    recent_base: u64,
    /// End of the last finding, in stream offsets.
    last_end: u64,
}

impl Flow<'_> {
    /// A fresh scan stream for this direction.
    fn stream(&self) -> ScanState {
        let state = ScanState::with_min_confidence(
            std::sync::Arc::clone(self.scanner),
            self.mode,
            self.min,
        );
        if self.outgoing {
            state.outgoing()
        } else {
            state
        }
    }

    /// Starts a message: a new stream, fed first with the carried bytes.
    fn start(&mut self, opcode: u8) -> Result<Message, Stop> {
        let carry = std::mem::take(&mut self.carry);
        let mut m = Message {
            state: self.stream(),
            opcode,
            sent: false,
            carried: carry.len() as u64,
            skip: carry.len() as u64,
            recent: Vec::new(),
            recent_base: 0,
            last_end: 0,
        };
        if !carry.is_empty() {
            // Its output is dropped by `skip`; nothing of it is new.
            let _nothing_new = self.feed(&mut m, carry, false)?;
        }
        Ok(m)
    }

    /// Feeds bytes to the message's stream (and ends it when `last`): what
    /// may be sent on, or why not.
    fn feed(&self, m: &mut Message, payload: Vec<u8>, last: bool) -> Result<Vec<u8>, Stop> {
        // Only a tail this long can be needed again: after a push, the
        // stream holds back at most `max_hold_back` bytes.
        let keep = self.scanner.max_hold_back() + self.scanner.context_kept();
        if payload.len() > keep {
            m.recent.clear();
            m.recent_base = m.state.seen() + (payload.len() - keep) as u64;
            m.recent
                .extend_from_slice(payload.get(payload.len() - keep..).unwrap_or_default());
        } else {
            m.recent.extend_from_slice(&payload);
        }
        let out = m.state.push(Bytes::from(payload));
        let mut findings = out.findings;
        let mut data = out.data.to_vec();
        if last && m.state.blocked().is_none() {
            let end = m.state.finish();
            findings.extend(end.findings);
            data.extend_from_slice(&end.data);
        }
        for f in &findings {
            m.last_end = m.last_end.max(f.end);
            // Found in the carried bytes alone: reported with its message.
            if f.end > m.carried {
                (self.sink)(f);
            }
        }
        if let Some(blocked) = m.state.blocked() {
            return Err(Stop::Blocked(blocked.label()));
        }
        if self.mode == ScanMode::Redact
            && let Some(f) = findings.iter().find(|f| f.start < m.carried)
        {
            // Its first part went out with the previous message and cannot
            // be redacted any more: the rest must not follow.
            return Err(Stop::Blocked(f.label()));
        }
        let drop = usize::try_from(m.skip)
            .unwrap_or(usize::MAX)
            .min(data.len());
        m.skip -= drop as u64;
        data.drain(..drop);
        Ok(data)
    }

    /// The bytes of a stream that the next message must see again: from
    /// where a finding could still start (less the scanner's look-behind
    /// context), and after the last finding.
    fn tail_of(&self, m: &Message, frontier: u64) -> Vec<u8> {
        let from = frontier
            .saturating_sub(self.scanner.context_kept() as u64)
            .max(m.last_end)
            .max(m.recent_base);
        let skip = usize::try_from(from - m.recent_base).unwrap_or(usize::MAX);
        m.recent.get(skip..).unwrap_or_default().to_vec()
    }

    /// Drops input bytes no later message can need (amortised).
    fn trim(&self, m: &mut Message) {
        let keep_from = m
            .state
            .reported_upto()
            .saturating_sub(self.scanner.context_kept() as u64);
        let dead = usize::try_from(keep_from.saturating_sub(m.recent_base)).unwrap_or(0);
        if dead > 64 * 1024 {
            m.recent.drain(..dead.min(m.recent.len()));
            m.recent_base += dead as u64;
        }
    }
}

/// One direction: frames from `from` to `to`.
///
/// Messages are one scanner stream each, and a message's unjudged tail is
/// scanned again at the head of the next one, so a secret split across
/// messages is found. When a message's tail could start a secret, its last
/// frame is held (at most [`MESSAGE_TAIL_WAIT`], or until the next message
/// shows it completes nothing): a secret split across two messages sent
/// together never reaches the peer, not even its first part. After the wait
/// the tail is sent, and a secret completed later by the next message still
/// stops the connection before the rest of it goes.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    scan: &WsScan,
    (mode, min, outgoing): (ScanMode, crate::scan::Confidence, bool),
    sink: &FindingSink,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // Buffered, so that waiting for the next frame can time out without
    // losing bytes of it (`fill_buf` keeps what it read; `read_exact` would
    // not, if cancelled midway).
    let mut from = tokio::io::BufReader::new(from);
    let from = &mut from;
    let mut flow = Flow {
        scanner: &scan.scanner,
        mode,
        min,
        outgoing,
        sink,
        message: None,
        carry: Vec::new(),
        held: None,
    };
    loop {
        let next = match &flow.held {
            Some((_, until)) => match tokio::time::timeout_at(*until, from.fill_buf()).await {
                Ok(_) => read_head(from).await,
                Err(_) => {
                    // Nothing completed the tail in time: send it.
                    if release(&mut flow, to).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            },
            None => read_head(from).await,
        };
        let head = match next {
            Ok(Some(h)) => h,
            // End of stream or a broken connection: nothing more to relay.
            Ok(None) | Err(_) => {
                let _ = release(&mut flow, to).await;
                return Ok(());
            }
        };
        if head.rsv != 0 {
            return Err(Stop::Refused(
                1003,
                "compressed or extended WebSocket frames cannot be scanned",
            ));
        }
        if head.len > MAX_FRAME {
            return Err(Stop::Refused(1009, "WebSocket frame larger than 1 MiB"));
        }
        let mut payload = vec![0u8; usize::try_from(head.len).unwrap_or(0)];
        if from.read_exact(&mut payload).await.is_err() {
            let _ = release(&mut flow, to).await;
            return Ok(());
        }
        if let Some(mask) = head.mask {
            apply_mask(&mut payload, mask);
        }
        if head.opcode >= 0x8 {
            if head.len > 125 || !head.fin {
                return Err(Stop::Refused(1002, "malformed WebSocket control frame"));
            }
            let state = flow.stream();
            let (_, mut data) = scanned(state, payload, true, sink)?;
            // A redaction marker may be longer than the secret it replaces.
            data.truncate(125);
            // A close ends the held message first; pings and pongs may come
            // between a message's frames.
            if head.opcode == 0x8 && release(&mut flow, to).await.is_err() {
                return Ok(());
            }
            let frame = encode(true, head.opcode, head.mask, &data);
            if to.write_all(&frame).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let mut m = match (flow.message.take(), head.opcode) {
            (None, op @ (0x1 | 0x2)) => flow.start(op)?,
            (Some(m), 0x0) => m,
            _ => return Err(Stop::Refused(1002, "unexpected WebSocket frame order")),
        };
        let frontier = m.state.reported_upto();
        let mut data = flow.feed(&mut m, payload, false)?;
        let mut tail = Vec::new();
        let mut tail_frontier = frontier;
        if head.fin {
            tail_frontier = m.state.reported_upto();
            tail = flow.feed(&mut m, Vec::new(), true)?;
        }
        // The previous message's last frame goes first, once this stream has
        // judged the bytes it carried (or this message is complete).
        let decided = m.state.emitted() >= m.carried || head.fin;
        if flow.held.is_some()
            && (decided || !data.is_empty() || !tail.is_empty())
            && release(&mut flow, to).await.is_err()
        {
            return Ok(());
        }
        if flow.held.is_some() {
            // Still undecided: everything released so far was carried.
            flow.message = Some(m);
            continue;
        }
        // Held in block mode only (outgoing, by default): redaction and logging
        // have nothing to stop, and incoming messages are not delayed.
        let hold = head.fin && !tail.is_empty() && mode == ScanMode::Block;
        if !head.fin || !hold {
            data.extend_from_slice(&tail);
        }
        let fin_now = head.fin && !hold;
        if !data.is_empty() || fin_now || !hold {
            let op = if m.sent { 0x0 } else { m.opcode };
            if to
                .write_all(&encode(fin_now, op, head.mask, &data))
                .await
                .is_err()
            {
                return Ok(());
            }
            m.sent = true;
        }
        if head.fin {
            flow.carry = flow.tail_of(&m, tail_frontier);
            if hold {
                let op = if m.sent { 0x0 } else { m.opcode };
                let until = tokio::time::Instant::now() + MESSAGE_TAIL_WAIT;
                flow.held = Some((encode(true, op, head.mask, &tail), until));
            }
        } else {
            flow.trim(&mut m);
            flow.message = Some(m);
        }
    }
}

/// Sends the held last frame of the previous message, if any.
async fn release<W: AsyncWrite + Unpin>(flow: &mut Flow<'_>, to: &mut W) -> std::io::Result<()> {
    match flow.held.take() {
        Some((frame, _)) => to.write_all(&frame).await,
        None => Ok(()),
    }
}

/// Feeds `payload` to a control frame's scanner stream and ends it: what
/// may be sent on, or why not.
fn scanned(
    mut state: ScanState,
    payload: Vec<u8>,
    last: bool,
    sink: &FindingSink,
) -> Result<(ScanState, BytesMut), Stop> {
    let mut out = state.push(Bytes::from(payload));
    let mut findings = std::mem::take(&mut out.findings);
    let mut data = BytesMut::from(&out.data[..]);
    if last && state.blocked().is_none() {
        let end = state.finish();
        findings.extend(end.findings);
        data.extend_from_slice(&end.data);
    }
    for f in &findings {
        sink(f);
    }
    match state.blocked() {
        Some(blocked) => Err(Stop::Blocked(blocked.label())),
        None => Ok((state, data)),
    }
}

async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<FrameHead>> {
    let mut two = [0u8; 2];
    match r.read_exact(&mut two).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = match two[1] & 0x7f {
        126 => u64::from(r.read_u16().await?),
        127 => r.read_u64().await?,
        n => u64::from(n),
    };
    let mask = if two[1] & 0x80 != 0 {
        let mut m = [0u8; 4];
        r.read_exact(&mut m).await?;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHead {
        fin: two[0] & 0x80 != 0,
        rsv: (two[0] >> 4) & 0x7,
        opcode: two[0] & 0x0f,
        mask,
        len,
    }))
}

fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// One frame; `payload` is plain and masked here when `mask` is given.
fn encode(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(m | n as u8),
        n @ 126..=0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key);
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn scanner() -> Arc<Scanner> {
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
        let set = crate::scan::PatternSet::load(&rules).unwrap();
        Arc::new(Scanner::new(&set, &[]).unwrap())
    }

    /// A fresh AWS key id of the right shape.
    fn fresh_key() -> String {
        use std::hash::BuildHasher;
        let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let tail: String = (0..16u64)
            .map(|i| {
                let r = std::collections::hash_map::RandomState::new().hash_one(i);
                abc[(r % 32) as usize] as char
            })
            .collect();
        format!("AKIA{tail}")
    }

    /// Two unmasked text messages carrying `key` split in two, through one
    /// direction in `mode`: the pump's result, what it sent, the findings.
    async fn split_key(mode: ScanMode, key: &str) -> (Result<(), Stop>, Vec<u8>, Vec<String>) {
        let found = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&found);
        let sink: FindingSink = Arc::new(move |f| {
            record.lock().unwrap().push(f.pattern_id.to_string());
        });
        let ws = WsScan {
            scanner: scanner(),
            outgoing: mode,
            incoming: mode,
            outgoing_min: crate::scan::Confidence::Shaped,
            incoming_min: crate::scan::Confidence::Shaped,
            out_sink: Arc::clone(&sink),
            in_sink: Arc::clone(&sink),
        };
        let (a, b) = key.split_at(10);
        let input = [
            encode(true, 0x1, None, format!("key {a}").as_bytes()),
            encode(true, 0x1, None, format!("{b} end").as_bytes()),
        ]
        .concat();
        let mut from = &input[..];
        let mut out = Vec::new();
        let r = pump(
            &mut from,
            &mut out,
            &ws,
            (mode, crate::scan::Confidence::Shaped, true),
            &sink,
        )
        .await;
        let found = found.lock().unwrap().clone();
        (r, out, found)
    }

    #[tokio::test]
    async fn a_key_split_across_messages_is_found_in_every_mode() {
        let key = fresh_key();
        let (_, second) = key.split_at(10);
        // Redact: the first half went out and cannot be redacted; the
        // second half never does.
        let (r, out, found) = split_key(ScanMode::Redact, &key).await;
        assert_eq!(r, Err(Stop::Blocked("aws-access-key-id".into())));
        assert!(!out.windows(second.len()).any(|w| w == second.as_bytes()));
        assert_eq!(found, ["aws-access-key-id"]);
        // Block: nothing of the key goes out.
        let (r, out, _) = split_key(ScanMode::Block, &key).await;
        assert_eq!(r, Err(Stop::Blocked("aws-access-key-id".into())));
        assert!(!out.windows(4).any(|w| w == b"AKIA"), "{out:?}");
        // Log: both messages pass whole; the finding is reported once.
        let (r, out, found) = split_key(ScanMode::Log, &key).await;
        assert_eq!(r, Ok(()));
        let (a, b) = key.split_at(10);
        let want = [
            encode(true, 0x1, None, format!("key {a}").as_bytes()),
            encode(true, 0x1, None, format!("{b} end").as_bytes()),
        ]
        .concat();
        assert_eq!(out, want);
        assert_eq!(found, ["aws-access-key-id"]);
    }

    /// Messages (opcode, payload) and control frames in `wire`, in order.
    async fn messages(wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut r = wire;
        let mut out = Vec::new();
        let mut open: Option<(u8, Vec<u8>)> = None;
        while let Some(head) = read_head(&mut r).await.unwrap() {
            let mut payload = vec![0u8; head.len as usize];
            r.read_exact(&mut payload).await.unwrap();
            if head.opcode >= 0x8 {
                out.push((head.opcode, payload));
                continue;
            }
            let (op, mut data) = open.take().unwrap_or((head.opcode, Vec::new()));
            data.extend_from_slice(&payload);
            if head.fin {
                out.push((op, data));
            } else {
                open = Some((op, data));
            }
        }
        out
    }

    #[tokio::test]
    async fn a_held_value_split_across_messages_is_blocked() {
        let token = format!("tok-{}", &fresh_key()[4..]);
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets.toml");
        let set = crate::scan::PatternSet::load(&rules).unwrap();
        let held = [crate::scan::HeldSecret::new(
            "file:tools/api#token",
            token.clone(),
        )];
        let sink: FindingSink = Arc::new(|_| {});
        let ws = WsScan {
            scanner: Arc::new(Scanner::new(&set, &held).unwrap()),
            outgoing: ScanMode::Block,
            incoming: ScanMode::Redact,
            outgoing_min: crate::scan::Confidence::Shaped,
            incoming_min: crate::scan::Confidence::Shaped,
            out_sink: Arc::clone(&sink),
            in_sink: Arc::clone(&sink),
        };
        let (a, b) = token.split_at(9);
        let input = [
            encode(true, 0x1, None, format!("here: {a}").as_bytes()),
            encode(true, 0x1, None, b.as_bytes()),
        ]
        .concat();
        let mut from = &input[..];
        let mut out = Vec::new();
        let r = pump(
            &mut from,
            &mut out,
            &ws,
            (ScanMode::Block, crate::scan::Confidence::Shaped, true),
            &sink,
        )
        .await;
        match r {
            Err(Stop::Blocked(id)) => assert!(id.starts_with("held:"), "{id}"),
            other => panic!("{other:?}"),
        }
        for piece in token.as_bytes().windows(8) {
            assert!(!out.windows(8).any(|w| w == piece), "{out:?}");
        }
    }

    #[tokio::test]
    async fn a_held_tail_keeps_the_stream_intact() {
        use tokio::io::AsyncWriteExt;
        let sink: FindingSink = Arc::new(|_| {});
        let ws = WsScan {
            scanner: scanner(),
            outgoing: ScanMode::Block,
            incoming: ScanMode::Redact,
            outgoing_min: crate::scan::Confidence::Shaped,
            incoming_min: crate::scan::Confidence::Shaped,
            out_sink: Arc::clone(&sink),
            in_sink: Arc::clone(&sink),
        };
        let (mut client, mut proxy_in) = tokio::io::duplex(1 << 16);
        let (mut proxy_out, mut origin) = tokio::io::duplex(1 << 16);
        let pump = tokio::spawn(async move {
            pump(
                &mut proxy_in,
                &mut proxy_out,
                &ws,
                (ScanMode::Block, crate::scan::Confidence::Shaped, true),
                &sink,
            )
            .await
        });
        // A message whose tail could start a key; a ping while it is held;
        // then a frame head split across the wait.
        client
            .write_all(&encode(true, 0x1, None, b"the id is AKIA"))
            .await
            .unwrap();
        client
            .write_all(&encode(true, 0x9, None, b"p"))
            .await
            .unwrap();
        let second = encode(true, 0x1, None, b" and nothing more\n");
        client.write_all(&second[..1]).await.unwrap();
        tokio::time::sleep(MESSAGE_TAIL_WAIT * 2).await;
        client.write_all(&second[1..]).await.unwrap();
        drop(client);
        assert_eq!(pump.await.unwrap(), Ok(()));
        let mut wire = Vec::new();
        origin.read_to_end(&mut wire).await.unwrap();
        assert_eq!(
            messages(&wire).await,
            [
                (0x9, b"p".to_vec()),
                (0x1, b"the id is AKIA".to_vec()),
                (0x1, b" and nothing more\n".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn frames_round_trip_through_the_codec() {
        for len in [0usize, 5, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = encode(true, 0x2, Some([1, 2, 3, 4]), &payload);
            let mut r = &wire[..];
            let head = read_head(&mut r).await.unwrap().unwrap();
            assert!(head.fin);
            assert_eq!((head.opcode, head.len), (0x2, len as u64));
            let mut got = r.to_vec();
            apply_mask(&mut got, head.mask.unwrap());
            assert_eq!(got, payload);
        }
    }
}
