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
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
        (scan.outgoing, scan.outgoing_min),
        &scan.out_sink,
    );
    let inc = pump(
        &mut ur,
        &mut cw,
        &scan,
        (scan.incoming, scan.incoming_min),
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

/// One direction: frames from `from` to `to`.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    scan: &WsScan,
    (mode, min): (ScanMode, crate::scan::Confidence),
    sink: &FindingSink,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // The message in progress: its scanner stream, and whether a frame of
    // it has been sent (later ones are continuations).
    let mut message: Option<(ScanState, u8, bool)> = None;
    loop {
        let head = match read_head(from).await {
            Ok(Some(h)) => h,
            // End of stream or a broken connection: nothing more to relay.
            Ok(None) | Err(_) => return Ok(()),
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
            return Ok(());
        }
        if let Some(mask) = head.mask {
            apply_mask(&mut payload, mask);
        }
        if head.opcode >= 0x8 {
            if head.len > 125 || !head.fin {
                return Err(Stop::Refused(1002, "malformed WebSocket control frame"));
            }
            let state =
                ScanState::with_min_confidence(std::sync::Arc::clone(&scan.scanner), mode, min);
            let (_, mut data) = scanned(state, payload, true, sink)?;
            // A redaction marker may be longer than the secret it replaces.
            data.truncate(125);
            let frame = encode(true, head.opcode, head.mask, &data);
            if to.write_all(&frame).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let (state, opcode, sent) = match (message.take(), head.opcode) {
            (None, op @ (0x1 | 0x2)) => (
                ScanState::with_min_confidence(std::sync::Arc::clone(&scan.scanner), mode, min),
                op,
                false,
            ),
            (Some(m), 0x0) => m,
            _ => return Err(Stop::Refused(1002, "unexpected WebSocket frame order")),
        };
        let (state, data) = scanned(state, payload, head.fin, sink)?;
        let frame = encode(head.fin, if sent { 0x0 } else { opcode }, head.mask, &data);
        if to.write_all(&frame).await.is_err() {
            return Ok(());
        }
        if !head.fin {
            message = Some((state, opcode, true));
        }
    }
}

/// Feeds `payload` to a message's scanner stream (and ends the stream on
/// the message's last frame): what may be sent on, or why not.
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
        Some(blocked) => Err(Stop::Blocked(blocked.pattern_id.to_string())),
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
