//! Inflate and deflate speed of zlib-rs (through flate2, what the project uses),
//! libdeflate (libdeflater) and ISA-L (isal-rs) on one gzip CSV and one plain
//! CSV, each on one thread, timed by that thread's CPU clock.
//!
//! ```text
//! cargo run --release -- INPUT.csv.gz OUTPUT.csv [REPEATS]
//! ```
//!
//! INPUT is what a batch inflates (the batch bench's generated input); OUTPUT
//! is what a batch deflates (a batch's decompressed output). Every inflater's
//! bytes are checked against zlib-rs's (length and CRC-32), and each inflater
//! is also given the input cut short by one byte: a batch must report that.

use std::io::{self, Read, Write};
use std::time::Instant;

const BLOCK: usize = 1 << 20;

fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// (median CPU seconds, median wall seconds, what the last run returned)
fn time<T>(repeats: usize, mut run: impl FnMut() -> T) -> (f64, f64, T) {
    let (mut cpu, mut wall, mut last) = (Vec::new(), Vec::new(), None);
    for _ in 0..repeats {
        let (c, w) = (cpu_seconds(), Instant::now());
        let out = run();
        cpu.push(cpu_seconds() - c);
        wall.push(w.elapsed().as_secs_f64());
        last = Some(out);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut cpu), median(&mut wall), last.expect("at least one repeat"))
}

/// What an inflater hands its caller: each block of output, then whether the
/// input was whole.
type Inflater = fn(&[u8], &mut dyn FnMut(&[u8])) -> io::Result<()>;

/// Reads `r` to its end in 1 MiB blocks, as the batch's read-ahead thread does.
fn drain(mut r: impl Read, block: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        block(&buf[..n]);
    }
}

fn zlib_rs(gz: &[u8], block: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    drain(flate2::read::MultiGzDecoder::new(gz), block)
}

fn isal(gz: &[u8], block: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    drain(isal::read::GzipDecoder::new(gz), block)
}

/// libdeflate has no streaming interface: the whole file in, the whole output
/// out (sized by the gzip trailer, which holds the length modulo 2^32 of the
/// last member only: enough for these single-member files).
fn libdeflate(gz: &[u8], block: &mut dyn FnMut(&[u8])) -> io::Result<()> {
    let size = u32::from_le_bytes(gz[gz.len() - 4..].try_into().expect("4 bytes")) as usize;
    let mut out = vec![0u8; size];
    let n = libdeflater::Decompressor::new()
        .gzip_decompress(gz, &mut out)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
    block(&out[..n]);
    Ok(())
}

/// (bytes, CRC-32) of what `inflate` makes of `gz`: checked outside the timing.
fn checked(inflate: Inflater, gz: &[u8]) -> io::Result<(u64, u32)> {
    let mut crc = flate2::Crc::new();
    inflate(gz, &mut |b| crc.update(b))?;
    Ok((crc.amount() as u64, crc.sum()))
}

/// Gzip of `plain` fed in 1 MiB writes, one member (zlib-rs, ISA-L) or one
/// member per 1 MiB (libdeflate, which cannot continue a stream).
fn deflate(codec: &str, plain: &[u8]) -> usize {
    match codec {
        "zlib-rs level 1" => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            plain.chunks(BLOCK).for_each(|c| gz.write_all(c).unwrap());
            gz.finish().unwrap().len()
        }
        "isal level 0" | "isal level 1" => {
            let level = if codec.ends_with('0') { isal::CompressionLevel::Zero } else { isal::CompressionLevel::One };
            let mut gz = isal::write::GzipEncoder::new(Vec::new(), level);
            plain.chunks(BLOCK).for_each(|c| gz.write_all(c).unwrap());
            gz.finish().unwrap().len()
        }
        "libdeflate level 1, a member per MiB" => {
            let mut compressor = libdeflater::Compressor::new(libdeflater::CompressionLvl::new(1).unwrap());
            let mut out = vec![0u8; compressor.gzip_compress_bound(BLOCK)];
            plain.chunks(BLOCK).map(|c| compressor.gzip_compress(c, &mut out).unwrap()).sum()
        }
        other => unreachable!("{other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output, rest @ ..] = args.as_slice() else {
        eprintln!("usage: crs-codecs INPUT.csv.gz OUTPUT.csv [REPEATS]");
        std::process::exit(2);
    };
    let repeats: usize = rest.first().map_or(5, |r| r.parse().expect("REPEATS is a number"));
    let gz = std::fs::read(input).expect("read INPUT");
    let plain = std::fs::read(output).expect("read OUTPUT");

    let detection = if cfg!(feature = "runtime_detection") { "with" } else { "without" };
    println!("zlib-rs {detection} runtime CPU detection (flate2's runtime_detection feature)\n");
    println!("inflate {input}: {:.1} MB gzip, {repeats} runs, medians", gz.len() as f64 / 1e6);
    println!("{:<34} {:>8} {:>8} {:>10} {:>8}  {}", "inflater", "cpu s", "wall s", "MB/s out", "streams", "cut short by one byte");
    let inflaters: [(&str, Inflater, bool); 3] =
        [("zlib-rs (flate2 MultiGzDecoder)", zlib_rs, true), ("isal-rs (read::GzipDecoder)", isal, true), ("libdeflater (gzip_decompress)", libdeflate, false)];
    let mut reference = None;
    for (name, inflate, streams) in inflaters {
        let (cpu, wall, result) = time(repeats, || {
            let mut bytes = 0;
            inflate(&gz, &mut |b| bytes += b.len()).map(|()| bytes)
        });
        let bytes = result.expect("inflates");
        let (length, crc) = checked(inflate, &gz).expect("inflates");
        let expected = *reference.get_or_insert((length, crc));
        assert_eq!((length, crc), expected, "{name} inflated different bytes");
        let truncated = match checked(inflate, &gz[..gz.len() - 1]) {
            Ok((n, _)) => format!("no error ({n} bytes)"),
            Err(e) => format!("error: {e}"),
        };
        println!("{name:<34} {cpu:>8.3} {wall:>8.3} {:>10.0} {:>8}  {truncated}", bytes as f64 / 1e6 / cpu, streams);
    }

    println!("\ndeflate {output}: {:.1} MB plain, {repeats} runs, medians", plain.len() as f64 / 1e6);
    println!("{:<38} {:>8} {:>8} {:>10} {:>10}", "deflater", "cpu s", "wall s", "MB/s in", "gzip MB");
    for codec in ["zlib-rs level 1", "isal level 0", "isal level 1", "libdeflate level 1, a member per MiB"] {
        let (cpu, wall, size) = time(repeats, || deflate(codec, &plain));
        println!("{codec:<38} {cpu:>8.3} {wall:>8.3} {:>10.0} {:>10.1}", plain.len() as f64 / 1e6 / cpu, size as f64 / 1e6);
    }
}
