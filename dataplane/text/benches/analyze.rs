//! Throughput of `analyze` and `encode` (issue 2: ≥ 2 000 000 analyses per
//! second of a 160-character GSM text on one core).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use smsgw_text::{Language, NationalLanguages, TextOptions, analyze, encode};
use std::hint::black_box;

fn gsm_160() -> String {
    let base = "Your verification code is 123456. It expires in 10 minutes. Do not share it with anyone, not even our staff. Questions? Call us at +1-555-0100 now!!";
    let mut s: String = base.chars().cycle().take(160).collect();
    s.truncate(160);
    assert_eq!(s.chars().count(), 160);
    s
}

fn benches(c: &mut Criterion) {
    let opts = TextOptions::default();
    let gsm = gsm_160();
    let gsm_ext = format!("{}€[]", &gsm[..150]);
    let cyrillic: String = "Ваш код подтверждения 123456. "
        .chars()
        .cycle()
        .take(70)
        .collect();
    let long_gsm = gsm.repeat(4);
    let turkish: String = "Şişli'de güzel bir gün geçirdik, ığdır çok uzak. "
        .chars()
        .cycle()
        .take(300)
        .collect();
    let national =
        opts.with_national(NationalLanguages::from(Language::Turkish).with(Language::Spanish));

    let mut g = c.benchmark_group("analyze");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gsm_160_chars", |b| {
        b.iter(|| analyze(black_box(&gsm), black_box(&opts)))
    });
    g.bench_function("gsm_160_chars_with_escapes", |b| {
        b.iter(|| analyze(black_box(&gsm_ext), black_box(&opts)))
    });
    g.bench_function("gsm_640_chars_multipart", |b| {
        b.iter(|| analyze(black_box(&long_gsm), black_box(&opts)))
    });
    g.bench_function("ucs2_70_chars", |b| {
        b.iter(|| analyze(black_box(&cyrillic), black_box(&opts)))
    });
    g.bench_function("turkish_300_chars_national", |b| {
        b.iter(|| analyze(black_box(&turkish), black_box(&national)))
    });
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gsm_160_chars", |b| {
        b.iter(|| encode(black_box(&gsm), black_box(&opts), 1))
    });
    g.bench_function("gsm_640_chars_multipart", |b| {
        b.iter(|| encode(black_box(&long_gsm), black_box(&opts), 1))
    });
    g.bench_function("ucs2_70_chars", |b| {
        b.iter(|| encode(black_box(&cyrillic), black_box(&opts), 1))
    });
    g.finish();
}

criterion_group!(analyze_benches, benches);
criterion_main!(analyze_benches);
