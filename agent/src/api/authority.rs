//! Unix-socket connections whose HTTP/2 `:authority` is not a valid URI
//! authority (grpc-core clients — Python `grpcio`, C++, Ruby — send the
//! percent-encoded socket path, e.g. `run%2Ffdr%2Ffdr.sock`) get it
//! replaced by `localhost` before the HTTP/2 server sees it: `h2` rejects
//! such a request with a stream reset (PROTOCOL_ERROR), and on a unix
//! socket the authority means nothing anyway.
//!
//! [`FixAuthority`] wraps the accepted stream and rewrites the client's
//! header blocks: frames pass through verbatim until a block carries an
//! invalid authority; from then on every header block of that connection
//! is decoded (HPACK, tracking the client's dynamic table) and re-encoded
//! as literals without indexing, so that the server's decoder never
//! depends on entries it did not see. Anything that does not parse as
//! HTTP/2 passes through untouched, for the server to reject.

use std::{
    collections::{HashMap, VecDeque},
    io,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frames we write stay within the smallest SETTINGS_MAX_FRAME_SIZE.
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is passed through, not decoded.
const MAX_BLOCK: usize = 1 << 20;
const REPLACEMENT: &[u8] = b"localhost";

/// A server-side stream whose incoming invalid `:authority` is replaced.
pub struct FixAuthority<S> {
    inner: S,
    fix: Rewriter,
    /// Bytes read from `inner`, not yet whole frames.
    input: Vec<u8>,
    /// Bytes ready for the reader.
    output: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        FixAuthority {
            inner,
            fix: Rewriter::default(),
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }
}

impl<S: Connected> Connected for FixAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.out_pos);
                buf.put_slice(&this.output[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.output.len() {
                    this.output.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever is left is not a whole frame: the server decides.
                if !this.input.is_empty() {
                    this.output.append(&mut this.input);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    if got.is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(got);
                        this.fix.process(&mut this.input, &mut this.output);
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The frame-level state of one connection's client-to-server bytes.
#[derive(Default)]
struct Rewriter {
    preface_done: usize,
    /// Not HTTP/2 as expected: everything passes through from now on.
    passthrough: bool,
    /// A block has been rewritten: every later block is re-encoded.
    rewriting: bool,
    decoder: Decoder,
    pending: Option<Pending>,
}

/// A header block spread over HEADERS and CONTINUATION frames.
struct Pending {
    stream: u32,
    end_stream: bool,
    fragment: Vec<u8>,
    raw: Vec<u8>,
}

impl Rewriter {
    /// Moves the whole frames of `input` to `output`, rewritten as needed.
    fn process(&mut self, input: &mut Vec<u8>, output: &mut Vec<u8>) {
        let mut at = 0;
        if self.preface_done < PREFACE_LEN {
            let n = (PREFACE_LEN - self.preface_done).min(input.len());
            output.extend_from_slice(&input[..n]);
            self.preface_done += n;
            at = n;
        }
        while !self.passthrough && input.len() - at >= FRAME_HEADER {
            let h = &input[at..at + FRAME_HEADER];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if input.len() - at < FRAME_HEADER + len {
                break;
            }
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let frame = &input[at..at + FRAME_HEADER + len];
            at += FRAME_HEADER + len;
            if let Err(()) = self.frame(ty, flags, stream, frame, output) {
                self.passthrough = true;
                if let Some(p) = self.pending.take() {
                    output.extend_from_slice(&p.raw);
                }
                output.extend_from_slice(frame);
            }
        }
        if self.passthrough {
            output.extend_from_slice(&input[at..]);
            at = input.len();
        }
        input.drain(..at);
    }

    fn frame(
        &mut self,
        ty: u8,
        flags: u8,
        stream: u32,
        frame: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<(), ()> {
        let payload = &frame[FRAME_HEADER..];
        match (ty, &mut self.pending) {
            (HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = usize::from(*p.first().ok_or(())?);
                    p = &p[1..];
                }
                if flags & PRIORITY != 0 {
                    p = p.get(5..).ok_or(())?;
                }
                let fragment = p.get(..p.len().checked_sub(pad).ok_or(())?).ok_or(())?;
                self.pending = Some(Pending {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    fragment: fragment.to_vec(),
                    raw: frame.to_vec(),
                });
            }
            (CONTINUATION, Some(p)) if p.stream == stream => {
                if p.fragment.len() + payload.len() > MAX_BLOCK {
                    return Err(());
                }
                p.fragment.extend_from_slice(payload);
                p.raw.extend_from_slice(frame);
            }
            (HEADERS | CONTINUATION, _) | (_, Some(_)) => return Err(()),
            (_, None) => {
                output.extend_from_slice(frame);
                return Ok(());
            }
        }
        if flags & END_HEADERS != 0 {
            let p = self.pending.take().ok_or(())?;
            if self.block(&p, output).is_err() {
                self.passthrough = true;
                output.extend_from_slice(&p.raw);
            }
        }
        Ok(())
    }

    fn block(&mut self, p: &Pending, output: &mut Vec<u8>) -> Result<(), ()> {
        let mut fields = self.decoder.decode(&p.fragment)?;
        let mut bad = false;
        for (name, value) in fields.iter_mut() {
            if name == b":authority" && !valid_authority(value) {
                *value = REPLACEMENT.to_vec();
                bad = true;
            }
        }
        if bad && !self.rewriting {
            tracing::debug!("a unix-socket client's :authority is not a URI authority; replaced");
            self.rewriting = true;
        }
        if !self.rewriting {
            output.extend_from_slice(&p.raw);
            return Ok(());
        }
        let block = encode(&fields);
        let mut chunks = block.chunks(MAX_FRAME).peekable();
        let mut first = true;
        if block.is_empty() {
            write_frame(
                output,
                HEADERS,
                END_HEADERS | end(p.end_stream),
                p.stream,
                &[],
            );
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let (ty, mut flags) = if first {
                (HEADERS, end(p.end_stream))
            } else {
                (CONTINUATION, 0)
            };
            if last {
                flags |= END_HEADERS;
            }
            write_frame(output, ty, flags, p.stream, chunk);
            first = false;
        }
        Ok(())
    }
}

fn end(end_stream: bool) -> u8 {
    if end_stream {
        END_STREAM
    } else {
        0
    }
}

fn valid_authority(v: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(v).is_ok()
}

fn write_frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// HPACK: every field as a literal without indexing, new name, no Huffman.
fn encode(fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        for s in [name, value] {
            encode_int(&mut out, s.len(), 7, 0);
            out.extend_from_slice(s);
        }
    }
    out
}

fn encode_int(out: &mut Vec<u8>, mut v: usize, prefix: u8, first: u8) {
    let max = (1usize << prefix) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// An HPACK decoder (RFC 7541) tracking the client's dynamic table.
struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
        }
    }
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

impl Decoder {
    fn decode(&mut self, mut b: &[u8]) -> Result<Fields, ()> {
        let mut out = Vec::new();
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                let i = int(&mut b, 7)?;
                out.push(self.get(i)?);
            } else if first & 0xc0 == 0x40 {
                let (name, value) = self.literal(&mut b, 6)?;
                self.insert(name.clone(), value.clone());
                out.push((name, value));
            } else if first & 0xe0 == 0x20 {
                let max = int(&mut b, 5)?;
                // Never above the server's default table size (4096), as
                // the server advertises no other.
                if max > 4096 {
                    return Err(());
                }
                self.max = max;
                self.evict(0);
            } else {
                out.push(self.literal(&mut b, 4)?);
            }
        }
        Ok(out)
    }

    fn literal(&self, b: &mut &[u8], prefix: u8) -> Result<(Vec<u8>, Vec<u8>), ()> {
        let i = int(b, prefix)?;
        let name = if i == 0 { string(b)? } else { self.get(i)?.0 };
        Ok((name, string(b)?))
    }

    fn get(&self, i: usize) -> Result<(Vec<u8>, Vec<u8>), ()> {
        match i {
            0 => Err(()),
            1..=61 => {
                let (n, v) = STATIC[i - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self.table.get(i - 62).cloned().ok_or(()),
        }
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = name.len() + value.len() + 32;
        if size > self.max {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front((name, value));
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + 32;
        }
    }
}

fn int(b: &mut &[u8], prefix: u8) -> Result<usize, ()> {
    let (&first, rest) = b.split_first().ok_or(())?;
    *b = rest;
    let max = (1usize << prefix) - 1;
    let mut v = usize::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let (&byte, rest) = b.split_first().ok_or(())?;
        *b = rest;
        if shift > 28 {
            return Err(());
        }
        v += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
}

fn string(b: &mut &[u8]) -> Result<Vec<u8>, ()> {
    let huffman = b.first().ok_or(())? & 0x80 != 0;
    let len = int(b, 7)?;
    let raw = b.get(..len).ok_or(())?;
    *b = &b[len..];
    if huffman {
        huffman_decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, ()> {
    static CODES: OnceLock<HashMap<(u8, u32), u8>> = OnceLock::new();
    let codes = CODES.get_or_init(|| {
        (0..=255u8)
            .map(|s| {
                let i = usize::from(s);
                ((ENCODE_CODE_LENGTHS[i], ENCODE_CODES[i]), s)
            })
            .collect()
    });
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0u8);
    for &byte in src {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if let Some(&s) = codes.get(&(len, code)) {
                out.push(s);
                code = 0;
                len = 0;
            } else if len >= 30 {
                return Err(());
            }
        }
    }
    // Padding: at most 7 bits, all ones (a prefix of EOS).
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(());
    }
    Ok(out)
}

/// RFC 7541 Appendix A.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

// The HPACK Huffman code (RFC 7541 Appendix B), as in the `h2` crate.
const ENCODE_CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8,
    0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed,
    0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4,
    0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, 0x14, 0x3f8,
    0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb,
    0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0,
    0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75,
    0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe,
    0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4,
    0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb,
    0x7fffdf, 0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1, 0x3fffe0,
    0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7,
    0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf,
    0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7,
    0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4,
    0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb,
    0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

const ENCODE_CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn text(fields: &Fields) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn decodes_the_rfc_7541_examples() {
        // C.4.1: Huffman-coded "www.example.com".
        assert_eq!(
            huffman_decode(&hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")).unwrap(),
            b"www.example.com"
        );
        // C.3: requests without Huffman, sharing the dynamic table.
        let mut d = Decoder::default();
        let first = d
            .decode(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d"))
            .unwrap();
        assert_eq!(
            text(&first)[3],
            (":authority".into(), "www.example.com".into())
        );
        let second = d
            .decode(&hex("8286 84be 5808 6e6f 2d63 6163 6865"))
            .unwrap();
        let second = text(&second);
        assert_eq!(second[3], (":authority".into(), "www.example.com".into()));
        assert_eq!(second[4], ("cache-control".into(), "no-cache".into()));
        assert!(d.decode(&hex("ff")).is_err(), "a truncated integer");
        assert!(d.decode(&hex("c0")).is_err(), "an index beyond the table");
    }

    fn headers_frame(stream: u32, block: &[u8], flags: u8) -> Vec<u8> {
        let mut f = Vec::new();
        write_frame(&mut f, HEADERS, flags, stream, block);
        f
    }

    /// (type, flags, stream, payload) of each frame after the preface.
    fn frames(mut b: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= FRAME_HEADER {
            let len = (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
            let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
            out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
            b = &b[9 + len..];
        }
        out
    }

    #[test]
    fn an_invalid_authority_is_replaced_and_later_blocks_stay_consistent() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut settings = Vec::new();
        write_frame(&mut settings, 0x4, 0, 0, &[]);
        // :method POST, :scheme http, :path /x, then :authority (static
        // name 1) with incremental indexing, value "tmp%2Ffdr.sock".
        let mut block1 = hex("83 86 44 02 2f 78 41");
        block1.push(14);
        block1.extend_from_slice(b"tmp%2Ffdr.sock");
        // The second request takes both from the dynamic table: 62 is the
        // authority (inserted last), 63 the path /x.
        let block2 = hex("83 86 be bf");
        let mut input = preface.to_vec();
        input.extend_from_slice(&settings);
        input.extend_from_slice(&headers_frame(1, &block1, END_HEADERS | END_STREAM));
        input.extend_from_slice(&headers_frame(3, &block2, END_HEADERS));
        // Fed in awkward pieces.
        let mut rw = Rewriter::default();
        let (mut pending, mut out) = (Vec::new(), Vec::new());
        for piece in input.chunks(7) {
            pending.extend_from_slice(piece);
            rw.process(&mut pending, &mut out);
        }
        assert!(pending.is_empty());
        assert_eq!(&out[..24], preface);
        let fr = frames(&out[24..]);
        assert_eq!(fr[0], (0x4, 0, 0, vec![]));
        assert_eq!(
            (fr[1].0, fr[1].1, fr[1].2),
            (HEADERS, END_HEADERS | END_STREAM, 1)
        );
        assert_eq!((fr[2].0, fr[2].1, fr[2].2), (HEADERS, END_HEADERS, 3));
        // What the server decodes, with a fresh decoder of its own.
        let mut server = Decoder::default();
        for f in &fr[1..] {
            let fields = text(&server.decode(&f.3).unwrap());
            assert!(
                fields.contains(&(":authority".into(), "localhost".into())),
                "{fields:?}"
            );
            assert!(
                fields.contains(&(":path".into(), "/x".into())),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn valid_authorities_and_other_frames_pass_verbatim() {
        let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut block = hex("83 86 84 41");
        block.push(9);
        block.extend_from_slice(b"localhost");
        // Split over HEADERS (padded, with priority) and CONTINUATION.
        let mut first = vec![2u8, 0, 0, 0, 0, 16];
        first.extend_from_slice(&block[..5]);
        first.extend_from_slice(&[0, 0]);
        input.extend_from_slice(&headers_frame(1, &first, PADDED | PRIORITY));
        write_frame(&mut input, CONTINUATION, END_HEADERS, 1, &block[5..]);
        write_frame(&mut input, 0x0, END_STREAM, 1, b"data");
        let mut rw = Rewriter::default();
        let (mut pending, mut out) = (input.clone(), Vec::new());
        rw.process(&mut pending, &mut out);
        assert_eq!(out, input);
        // Garbage passes through untouched, for the server to reject.
        let mut junk = vec![0, 0, 1, HEADERS, END_HEADERS, 0, 0, 0, 5, 0xff];
        let copy = junk.clone();
        let mut out = Vec::new();
        rw.process(&mut junk, &mut out);
        assert_eq!(out, copy);
    }
}
