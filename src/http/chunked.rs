//! Decoding a chunked request body (RFC 9112 §7.1), to discard it exactly or to pass its
//! data on.
//!
//! The built-in handler's requests are read only to find where they end, so that the
//! answer is sent after the whole request and a kept-alive connection stays framed; in
//! upstream mode the data is forwarded, re-framed. The decoder is fed whatever bytes have
//! arrived and says how many it consumed, where the data in them is, and whether the body
//! (last chunk and trailer section included) is complete. It keeps nothing of the data.
//!
//! It is strict where leniency has been used to smuggle requests: chunk lines end in
//! CRLF (a bare LF or CR is a 400), the size is hexadecimal digits only, and every byte
//! is bounded: at most [`MAX_BODY_BYTES`] of data (or the limit it is given; else 413) and [`MAX_FRAMING_BYTES`]
//! of sizes, extensions and trailers (else 413). Extensions are skipped; trailer fields
//! must be well-formed field lines and are ignored.

use super::{is_tchar, Reject, MAX_BODY_BYTES};

/// Most bytes of chunk-size lines, extensions and trailer fields in one body.
pub const MAX_FRAMING_BYTES: usize = 64 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hexadecimal chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size: white space before an extension or the line end.
    SizeSpace,
    /// In a chunk extension, up to the line end.
    Extension,
    /// Expecting the LF of a chunk-size line.
    SizeLf,
    /// In chunk data, `left` bytes to go.
    Data {
        left: u64,
    },
    /// Expecting the CR, then the LF, that end chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// In a trailer field name; `len` so far.
    TrailerName {
        len: usize,
    },
    /// In a trailer field value, up to its line end.
    TrailerValue,
    /// Expecting the LF of a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    FinalLf,
    Done,
}

/// A chunked body being read.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    size: u64,
    data: u64,
    framing: usize,
    /// Most bytes of data accepted in all (more is 413).
    max_data: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_limit(MAX_BODY_BYTES)
    }
}

/// What [`Decoder::next`] found in a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Bytes of the buffer that belong to the body, framing and data alike, from its start.
    pub consumed: usize,
    /// Where the data found is in the buffer, if any.
    pub data: Option<std::ops::Range<usize>>,
    /// The last chunk and the trailer section have been read.
    pub done: bool,
}

impl Decoder {
    /// A decoder accepting at most `max_data` bytes of data (more is 413).
    pub fn with_limit(max_data: u64) -> Decoder {
        Decoder {
            state: State::Size { digits: 0 },
            size: 0,
            data: 0,
            framing: 0,
            max_data,
        }
    }

    /// Consumes from `buf` what belongs to the body: `Ok((consumed, done))`. Bytes after
    /// the end of the body are not consumed (they are the next request).
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), Reject> {
        let mut at = 0;
        loop {
            let piece = self.next(&buf[at..])?;
            at += piece.consumed;
            if piece.done || piece.consumed == 0 || at == buf.len() {
                return Ok((at, piece.done));
            }
        }
    }

    /// Reads framing from the start of `buf` up to the next run of data (which it consumes
    /// too, and points at), the end of the body, or the end of `buf`.
    pub fn next(&mut self, buf: &[u8]) -> Result<Piece, Reject> {
        let mut i = 0;
        while i < buf.len() {
            if let State::Data { left } = self.state {
                let take = left.min((buf.len() - i) as u64);
                self.state = if take == left {
                    State::DataCr
                } else {
                    State::Data { left: left - take }
                };
                let data = i..i + take as usize;
                return Ok(Piece {
                    consumed: data.end,
                    data: Some(data),
                    done: false,
                });
            }
            if self.state == State::Done {
                break;
            }
            let b = buf[i];
            i += 1;
            self.framing += 1;
            if self.framing > MAX_FRAMING_BYTES {
                return Err(Reject::PayloadTooLarge);
            }
            self.state = self.step(b)?;
        }
        Ok(Piece {
            consumed: i,
            data: None,
            done: self.state == State::Done,
        })
    }

    /// Whether the last chunk and the trailer section have been read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    fn step(&mut self, b: u8) -> Result<State, Reject> {
        use State::*;
        let bad = Err(Reject::BadRequest);
        Ok(match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                // More than 16 digits cannot be a size we accept anyway.
                if digits >= 16 {
                    return Err(Reject::PayloadTooLarge);
                }
                let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                self.size = self.size << 4 | digit;
                if self.data + self.size > self.max_data {
                    return Err(Reject::PayloadTooLarge);
                }
                Size { digits: digits + 1 }
            }
            (Size { digits: 0 }, _) => return bad,
            (Size { .. } | SizeSpace, b' ' | b'\t') => SizeSpace,
            (Size { .. } | SizeSpace, b';') => Extension,
            (Size { .. } | SizeSpace | Extension, b'\r') => SizeLf,
            (Size { .. } | SizeSpace, _) => return bad,
            (Extension, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => Extension,
            (Extension, _) => return bad,
            (SizeLf, b'\n') => {
                let size = std::mem::take(&mut self.size);
                self.data += size;
                if size == 0 {
                    TrailerStart
                } else {
                    Data { left: size }
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0 },
            (TrailerStart, b'\r') => FinalLf,
            (TrailerStart, _) if is_tchar(b) => TrailerName { len: 1 },
            (TrailerName { len }, _) if is_tchar(b) => TrailerName { len: len + 1 },
            (TrailerName { .. }, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if b == b'\t' || (b >= 0x20 && b != 0x7f) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (FinalLf, b'\n') => Done,
            _ => return bad,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` whole; the bytes consumed and whether it completed.
    fn decode(body: &[u8]) -> Result<(usize, bool), Reject> {
        Decoder::default().feed(body)
    }

    /// Feeds `body` one byte at a time.
    fn decode_bytewise(body: &[u8]) -> Result<(usize, bool), Reject> {
        let mut d = Decoder::default();
        let mut consumed = 0;
        for chunk in body.chunks(1) {
            if d.done() {
                break;
            }
            consumed += d.feed(chunk)?.0;
        }
        Ok((consumed, d.done()))
    }

    #[test]
    fn reads_chunks_extensions_and_trailers() {
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=value\r\nhello\r\n6 ; a=\"b c\"\r\n world\r\n0\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\nExpires: never\r\nX-Sum:\tabc \r\n\r\n",
            b"00000003\r\nabc\r\n000\r\n\r\n",
        ] {
            assert_eq!(decode(body), Ok((body.len(), true)), "{body:?}");
            assert_eq!(decode_bytewise(body), Ok((body.len(), true)), "{body:?}");
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let both = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(decode(both), Ok((13, true)));
    }

    #[test]
    fn a_partial_body_asks_for_more() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        for cut in 0..body.len() {
            assert_eq!(decode(&body[..cut]), Ok((cut, false)), "{cut}");
        }
    }

    #[test]
    fn malformed_framing_is_a_bad_request() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXY0\r\n\r\n",
            b"5\r\r\n",
            b"5;a\x00b\r\n",
            b"0\r\nbad header\r\n\r\n",
            b"0\r\n: novalue\r\n\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
            b"0\r\n\n",
            b"0x5\r\n",
        ] {
            assert_eq!(decode(body), Err(Reject::BadRequest), "{body:?}");
        }
    }

    #[test]
    fn data_and_framing_are_bounded() {
        // 64 KiB in one chunk is fine, one byte more is not.
        let mut body = b"10000\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', 65_536));
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(decode(&body), Ok((body.len(), true)));
        assert_eq!(decode(b"10001\r\n"), Err(Reject::PayloadTooLarge));
        // The total counts across chunks.
        let mut two = b"8000\r\n".to_vec();
        two.extend(std::iter::repeat_n(b'a', 0x8000));
        two.extend_from_slice(b"\r\n8001\r\n");
        assert_eq!(decode(&two), Err(Reject::PayloadTooLarge));
        assert_eq!(
            decode(b"00000000000000001\r\n"),
            Err(Reject::PayloadTooLarge)
        );
        // An endless extension or trailer section.
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'x', MAX_FRAMING_BYTES));
        assert_eq!(decode(&ext), Err(Reject::PayloadTooLarge));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A well-formed chunked body: chunks of any size, optional extensions, trailers.
    fn body() -> impl Strategy<Value = (Vec<u8>, u64)> {
        let chunk = (
            1usize..3000,
            proptest::option::of("[a-z]{1,8}(=[a-z0-9]{0,8})?"),
            0usize..3,
        );
        (
            proptest::collection::vec(chunk, 0..12),
            proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,10}: [ -~]{0,20}", 0..3),
        )
            .prop_map(|(chunks, trailers)| {
                let mut out = Vec::new();
                let mut data = 0u64;
                for (size, ext, zeros) in chunks {
                    out.extend(std::iter::repeat_n(b'0', zeros));
                    out.extend_from_slice(format!("{size:x}").as_bytes());
                    if let Some(ext) = ext {
                        out.extend_from_slice(format!(";{ext}").as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend(std::iter::repeat_n(b'd', size));
                    out.extend_from_slice(b"\r\n");
                    data += size as u64;
                }
                out.extend_from_slice(b"0\r\n");
                for t in trailers {
                    out.extend_from_slice(t.trim_end().as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                (out, data)
            })
    }

    proptest! {
        /// However a valid body is split into reads, it is consumed exactly, and judged
        /// by its data size alone.
        #[test]
        fn any_split_of_a_valid_body_reads_the_same(
            (body, data) in body(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            next in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut wire = body.clone();
            wire.extend_from_slice(&next);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut d = Decoder::default();
            let mut consumed = 0;
            let mut result = Ok(());
            for w in points.windows(2) {
                if d.done() || result.is_err() {
                    break;
                }
                // Bytes not consumed stay in front of the next read.
                match d.feed(&wire[consumed..w[1]]) {
                    Ok((n, _)) => consumed += n,
                    Err(e) => result = Err(e),
                }
            }
            if data > MAX_BODY_BYTES {
                prop_assert_eq!(result, Err(Reject::PayloadTooLarge));
            } else {
                prop_assert_eq!(result, Ok(()));
                prop_assert!(d.done());
                prop_assert_eq!(consumed, body.len());
            }
        }

        /// However a valid body is split into reads, the data passed on is exactly the
        /// chunks' data, and the framing is never part of it.
        #[test]
        fn any_split_passes_on_exactly_the_data(
            (body, data) in body(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            points.push(0);
            points.push(body.len());
            points.sort_unstable();
            let mut d = Decoder::with_limit(u64::MAX);
            let (mut consumed, mut passed) = (0, Vec::new());
            for w in points.windows(2) {
                while consumed < w[1] && !d.done() {
                    let piece = d.next(&body[consumed..w[1]]).unwrap();
                    if let Some(r) = piece.data {
                        passed.extend_from_slice(&body[consumed + r.start..consumed + r.end]);
                    }
                    consumed += piece.consumed;
                    if piece.consumed == 0 {
                        break;
                    }
                }
            }
            prop_assert!(d.done());
            prop_assert_eq!(consumed, body.len());
            prop_assert_eq!(passed.len() as u64, data);
            prop_assert!(passed.iter().all(|b| *b == b'd'));
        }

        /// Arbitrary bytes never panic and never consume more than given.
        #[test]
        fn arbitrary_bytes_are_judged_safely(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok((n, _)) = Decoder::default().feed(&buf) {
                prop_assert!(n <= buf.len());
            }
        }
    }
}
