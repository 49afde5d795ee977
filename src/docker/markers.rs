//! Finding a stage's output in a container's output stream.
//!
//! The stage shell frames each stage with markers that carry the stage's nonce: a start line
//! `NONCE S[ extra]` and an end line `NONCE E[ extra]`, printed right after the stage's last
//! byte (the nonce is unguessable, so it is found anywhere, not only at a line start). A
//! [`Scanner`] per stream drops what comes before the start line, passes what lies between as
//! soon as it arrives, byte for byte, and holds back at most a partial end marker: only a tail
//! that begins the nonce. Output ending in a newline (nearly every chunk) is never held, so
//! the lines of stdout and stderr reach the job log in the order they were written.

use std::io;

use memchr::memmem;

/// Longest text a marker line may carry after its marker (a PID or an exit code).
const MAX_EXTRA: usize = 32;

/// Where a stream is in its stage.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before the start line: leftovers of an earlier stage, dropped.
    Before,
    /// After the start marker, reading the rest of its line.
    StartLine,
    /// The stage's output.
    Passing,
    /// After the end marker, reading the rest of its line.
    EndLine,
    Done,
    /// The start line said the stage's output goes elsewhere (`F`, see [`super::direct`]):
    /// the rest of this stream is leftovers, dropped.
    Diverted,
}

/// Splits one stream (stdout or stderr) of a container into the stage's output and its
/// marker lines.
#[derive(Debug)]
pub(crate) struct Scanner {
    start: Vec<u8>,
    end: Vec<u8>,
    /// Searchers for both markers, built once: a stream passes through in thousands of chunks.
    find_start: memmem::Finder<'static>,
    find_end: memmem::Finder<'static>,
    phase: Phase,
    /// Before: the last bytes seen (a start marker may straddle chunks). StartLine/EndLine:
    /// the line so far. Passing: a possible beginning of the end marker.
    held: Vec<u8>,
    start_extra: Option<String>,
    end_extra: Option<String>,
}

impl Scanner {
    pub(crate) fn new(nonce: &str) -> Scanner {
        let (start, end) = (
            format!("{nonce} S").into_bytes(),
            format!("{nonce} E").into_bytes(),
        );
        Scanner {
            find_start: memmem::Finder::new(&start).into_owned(),
            find_end: memmem::Finder::new(&end).into_owned(),
            start,
            end,
            phase: Phase::Before,
            held: Vec::new(),
            start_extra: None,
            end_extra: None,
        }
    }

    /// A scanner for a stream that holds only this stage's output and end line (a FIFO of
    /// its own): no start line to wait for.
    pub(crate) fn started(nonce: &str) -> Scanner {
        Scanner {
            phase: Phase::Passing,
            ..Scanner::new(nonce)
        }
    }

    /// Whether this stream has nothing more for the stage: its end line has been read in
    /// full, or its start line said the output goes elsewhere.
    pub(crate) fn done(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Diverted)
    }

    /// Whether the start line said the stage's output goes elsewhere.
    pub(crate) fn diverted(&self) -> bool {
        self.phase == Phase::Diverted
    }

    /// The text after the start marker (trimmed), once its line is complete.
    pub(crate) fn start_extra(&self) -> Option<&str> {
        self.start_extra.as_deref()
    }

    /// The text after the end marker (trimmed), once its line is complete.
    pub(crate) fn end_extra(&self) -> Option<&str> {
        self.end_extra.as_deref()
    }

    /// Feeds the next chunk of the stream; the stage's output goes to `sink` as it is found.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        sink: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        while !data.is_empty() {
            data = match self.phase {
                Phase::Before => self.before(data),
                Phase::StartLine | Phase::EndLine => self.marker_line(data),
                Phase::Passing => self.passing(data, sink)?,
                Phase::Done | Phase::Diverted => &[],
            };
        }
        Ok(())
    }

    fn before<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        // `held` keeps fewer bytes than the marker, so a marker that began in an earlier
        // chunk ends within the first `keep` bytes of this one.
        let keep = self.start.len() - 1;
        let mut joint = std::mem::take(&mut self.held);
        let held = joint.len();
        joint.extend_from_slice(&data[..data.len().min(keep)]);
        let found = self
            .find_start
            .find(&joint)
            .map(|i| i + self.start.len() - held)
            .or_else(|| self.find_start.find(data).map(|i| i + self.start.len()));
        if let Some(consumed) = found {
            self.phase = Phase::StartLine;
            return &data[consumed..];
        }
        if data.len() >= keep {
            self.held = data[data.len() - keep..].to_vec();
        } else {
            joint.drain(..joint.len().saturating_sub(keep));
            self.held = joint;
        }
        &[]
    }

    fn marker_line<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let (line, rest, complete) = match memchr::memchr(b'\n', data) {
            Some(i) => (&data[..i], &data[i + 1..], true),
            None => (data, &[][..], false),
        };
        if self.held.len() < MAX_EXTRA {
            let room = MAX_EXTRA - self.held.len();
            self.held.extend_from_slice(&line[..line.len().min(room)]);
        }
        if complete {
            let extra = String::from_utf8_lossy(&self.held).trim().to_owned();
            self.held.clear();
            if self.phase == Phase::StartLine {
                self.phase = if extra.split_whitespace().last() == Some("F") {
                    Phase::Diverted
                } else {
                    Phase::Passing
                };
                self.start_extra = Some(extra);
            } else {
                self.end_extra = Some(extra);
                self.phase = Phase::Done;
            }
        }
        rest
    }

    fn passing<'a>(
        &mut self,
        data: &'a [u8],
        sink: &mut impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<&'a [u8]> {
        if !self.held.is_empty() {
            // A possible end marker began in an earlier chunk: look at it with the start of
            // this one.
            let held = self.held.len();
            let take = data.len().min(self.end.len());
            let mut joint = std::mem::take(&mut self.held);
            joint.extend_from_slice(&data[..take]);
            if let Some(i) = self.find_end.find(&joint) {
                sink(&joint[..i])?;
                self.phase = Phase::EndLine;
                return Ok(&data[i + self.end.len() - held..]);
            }
            if take == data.len() {
                let j = self.tail_start(&joint);
                sink(&joint[..j])?;
                self.held = joint.split_off(j);
                return Ok(&[]);
            }
            // A marker that began in the held bytes would have ended inside the joint: they
            // are output.
            sink(&joint[..held])?;
        }
        if let Some(i) = self.find_end.find(data) {
            sink(&data[..i])?;
            self.phase = Phase::EndLine;
            return Ok(&data[i + self.end.len()..]);
        }
        let j = self.tail_start(data);
        sink(&data[..j])?;
        self.held.extend_from_slice(&data[j..]);
        Ok(&[])
    }

    /// Where the longest tail of `data` that begins the end marker starts (`data.len()` when
    /// none does).
    fn tail_start(&self, data: &[u8]) -> usize {
        let window = data.len().saturating_sub(self.end.len() - 1);
        // Only where the nonce's first byte is (rarely anywhere, on output not made of hex).
        memchr::memchr_iter(self.end[0], &data[window..])
            .map(|j| window + j)
            .find(|&j| self.end.starts_with(&data[j..]))
            .unwrap_or(data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    /// Feeds `chunks` and returns (output, start extra, end extra).
    fn scan(chunks: &[&[u8]]) -> (Vec<u8>, Option<String>, Option<String>, bool) {
        let mut s = Scanner::new(NONCE);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut |b: &[u8]| {
                out.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        }
        (
            out,
            s.start_extra().map(str::to_owned),
            s.end_extra().map(str::to_owned),
            s.done(),
        )
    }

    fn framed(output: &str) -> Vec<u8> {
        format!("leftover {NONCE} S 42\n{output}{NONCE} E 7\nlate").into_bytes()
    }

    #[test]
    fn passes_what_lies_between_the_markers() {
        let (out, start, end, done) = scan(&[&framed("hello\nworld\n")]);
        assert_eq!(out, b"hello\nworld\n");
        assert_eq!(start.as_deref(), Some("42"));
        assert_eq!(end.as_deref(), Some("7"));
        assert!(done);
    }

    #[test]
    fn output_without_a_final_newline_is_kept_exactly() {
        let (out, ..) = scan(&[&framed("50%")]);
        assert_eq!(out, b"50%");
        let (out, ..) = scan(&[&framed("")]);
        assert_eq!(out, b"");
    }

    #[test]
    fn markers_split_at_every_byte_boundary_are_found() {
        let whole = framed("line one\n\nline\tthree\n");
        for size in 1..whole.len() {
            let chunks: Vec<&[u8]> = whole.chunks(size).collect();
            let (out, start, end, done) = scan(&chunks);
            assert_eq!(out, b"line one\n\nline\tthree\n", "chunk size {size}");
            assert_eq!(start.as_deref(), Some("42"), "chunk size {size}");
            assert_eq!(end.as_deref(), Some("7"), "chunk size {size}");
            assert!(done);
        }
    }

    #[test]
    fn a_near_miss_of_the_end_marker_is_output() {
        let fake = format!("{} E 0\n{NONCE}", &NONCE[..31]);
        let whole = framed(&fake);
        for size in 1..whole.len() {
            let chunks: Vec<&[u8]> = whole.chunks(size).collect();
            let (out, ..) = scan(&chunks);
            assert_eq!(out, fake.as_bytes(), "chunk size {size}");
        }
    }

    #[test]
    fn only_a_tail_that_begins_the_nonce_is_held_back() {
        let mut s = Scanner::new(NONCE);
        let out = std::cell::RefCell::new(Vec::new());
        let mut sink = |b: &[u8]| {
            out.borrow_mut().extend_from_slice(b);
            Ok(())
        };
        s.feed(format!("{NONCE} S 1\n").as_bytes(), &mut sink)
            .unwrap();
        // Lines and progress bars pass at once, so stdout and stderr keep their order.
        s.feed(b"line\n", &mut sink).unwrap();
        s.feed(b"progress 10%", &mut sink).unwrap();
        s.feed(format!("x{}", &NONCE[..5]).as_bytes(), &mut sink)
            .unwrap();
        assert_eq!(*out.borrow(), b"line\nprogress 10%x");
        assert!(!s.done());
        // Not the marker after all: the held bytes pass with what follows.
        s.feed(b"y\n", &mut sink).unwrap();
        assert_eq!(
            *out.borrow(),
            format!("line\nprogress 10%x{}y\n", &NONCE[..5]).as_bytes()
        );
    }

    #[test]
    fn nothing_passes_before_the_start_marker() {
        let (out, start, _, done) = scan(&[b"old output\nmore", b" old"]);
        assert!(out.is_empty());
        assert_eq!(start, None);
        assert!(!done);
    }

    #[test]
    fn an_oversized_marker_line_is_cut() {
        let long = "9".repeat(100);
        let (_, start, ..) = scan(&[format!("{NONCE} S {long}\nx").as_bytes()]);
        assert_eq!(start.unwrap().len(), MAX_EXTRA - 1);
    }

    #[test]
    fn a_start_line_ending_in_f_diverts_the_stream() {
        let whole = format!("old {NONCE} S 42 F\nleftover of an earlier stage\n{NONCE} E 7\n");
        let (out, start, end, done) = scan(&[whole.as_bytes()]);
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
        assert_eq!(start.as_deref(), Some("42 F"));
        assert_eq!(end, None);
        assert!(done);
    }

    #[test]
    fn a_started_scanner_passes_from_the_first_byte() {
        let mut s = Scanner::started(NONCE);
        let mut out = Vec::new();
        let whole = format!("{NONCE} S look-alike\nout\n{NONCE} E 3\n");
        // (A started scanner has no start line: the look-alike is output.)
        s.feed(whole.as_bytes(), &mut |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(out, format!("{NONCE} S look-alike\nout\n").as_bytes());
        assert_eq!(s.end_extra(), Some("3"));
        assert!(s.done() && !s.diverted());
    }

    proptest::proptest! {
        /// Output made of the nonce's own pieces, cut anywhere, passes exactly and the end
        /// marker is still found.
        #[test]
        fn output_of_near_misses_cut_anywhere_passes_exactly(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec!["0", "01", "0123", &NONCE[..20], &NONCE[..31], " E", "\n", "x"]),
                0..40,
            ),
            cuts in proptest::collection::vec(1usize..50, 1..20),
        ) {
            let output = pieces.concat();
            let whole = framed(&output);
            let (mut chunks, mut rest) = (Vec::new(), &whole[..]);
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                chunks.push(chunk);
                rest = tail;
            }
            let (out, _, end, done) = scan(&chunks);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), output);
            proptest::prop_assert_eq!(end.as_deref(), Some("7"));
            proptest::prop_assert!(done);
        }
    }
}
