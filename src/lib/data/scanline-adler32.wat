;; Adler-32 (RFC 1950) of a PNG image's scanline stream with filter type 0: `rows` rows of `stride`
;; bytes packed at `ptr`, each preceded in the stream by a zero filter byte that is not in memory.
;; It is the checksum that ends the zlib stream of a PNG written with stored (uncompressed) deflate
;; blocks. WebAssembly SIMD, 16 bytes per step: ~7 GB/s, against ~0.6 GB/s for plain JS.
;;
;; The binary is generated from this file: `npm run build:wasm` writes scanline-adler32-wasm.ts,
;; and a test checks that the two agree.
;;
;; For bytes d_1..d_L added to sums (a, b): a' = a + sum d_i, b' = b + L*a + sum (L - i + 1) d_i.
;; Per 16-byte step k with bytes v: s1 += sum v (per lane), s2 += sum (16 - j) v_j (per lane), and
;; ps += s1 before it, which sums each earlier step's bytes once per later step; then
;; b' = b + L*a + 16*ps + s2. At most 5552 bytes go between reductions mod 65521 (zlib's NMAX), so
;; no 32-bit lane overflows: ps < 347 * 347 * 4 * 255.
(module
  (memory (export "memory") 1)
  (global $a (mut i64) (i64.const 1))
  (global $b (mut i64) (i64.const 0))

  (func $hsum (param $v v128) (result i64)
    (i64.add
      (i64.add (i64.extend_i32_u (i32x4.extract_lane 0 (local.get $v))) (i64.extend_i32_u (i32x4.extract_lane 1 (local.get $v))))
      (i64.add (i64.extend_i32_u (i32x4.extract_lane 2 (local.get $v))) (i64.extend_i32_u (i32x4.extract_lane 3 (local.get $v))))))

  ;; Adds the n <= 5552 bytes at p to (a, b) and reduces both mod 65521.
  (func $block (param $p i32) (param $n i32)
    (local $end i32) (local $s1 v128) (local $s2 v128) (local $ps v128) (local $v v128)
    (local.set $end (i32.add (local.get $p) (i32.and (local.get $n) (i32.const -16))))
    (global.set $b (i64.add (global.get $b)
      (i64.mul (i64.extend_i32_u (i32.and (local.get $n) (i32.const -16))) (global.get $a))))
    (block $done
      (loop $steps
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $ps (i32x4.add (local.get $ps) (local.get $s1)))
        (local.set $s1 (i32x4.add (local.get $s1)
          (i32x4.extadd_pairwise_i16x8_u (i16x8.extadd_pairwise_i8x16_u (local.get $v)))))
        ;; lane j (the j-th byte in memory order) weighs 16 - j
        (local.set $s2 (i32x4.add (local.get $s2)
          (i32x4.add
            (i32x4.dot_i16x8_s (i16x8.extend_low_i8x16_u (local.get $v)) (v128.const i16x8 16 15 14 13 12 11 10 9))
            (i32x4.dot_i16x8_s (i16x8.extend_high_i8x16_u (local.get $v)) (v128.const i16x8 8 7 6 5 4 3 2 1)))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $steps)))
    (global.set $b (i64.add (global.get $b)
      (i64.add (i64.shl (call $hsum (local.get $ps)) (i64.const 4)) (call $hsum (local.get $s2)))))
    (global.set $a (i64.add (global.get $a) (call $hsum (local.get $s1))))
    ;; the last n mod 16 bytes one at a time
    (local.set $end (i32.add (local.get $end) (i32.and (local.get $n) (i32.const 15))))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $p) (local.get $end)))
        (global.set $a (i64.add (global.get $a) (i64.load8_u (local.get $p))))
        (global.set $b (i64.add (global.get $b) (global.get $a)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $tail)))
    (global.set $a (i64.rem_u (global.get $a) (i64.const 65521)))
    (global.set $b (i64.rem_u (global.get $b) (i64.const 65521))))

  (func (export "scanlineAdler32") (param $ptr i32) (param $rows i32) (param $stride i32) (result i32)
    (local $left i32) (local $n i32)
    (global.set $a (i64.const 1))
    (global.set $b (i64.const 0))
    (block $done
      (loop $row
        (br_if $done (i32.eqz (local.get $rows)))
        ;; the filter byte adds 0 to a, and a to b
        (global.set $b (i64.rem_u (i64.add (global.get $b) (global.get $a)) (i64.const 65521)))
        (local.set $left (local.get $stride))
        (block $row_done
          (loop $blocks
            (br_if $row_done (i32.eqz (local.get $left)))
            (local.set $n (select (i32.const 5552) (local.get $left) (i32.gt_u (local.get $left) (i32.const 5552))))
            (call $block (local.get $ptr) (local.get $n))
            (local.set $ptr (i32.add (local.get $ptr) (local.get $n)))
            (local.set $left (i32.sub (local.get $left) (local.get $n)))
            (br $blocks)))
        (local.set $rows (i32.sub (local.get $rows) (i32.const 1)))
        (br $row)))
    (i32.wrap_i64 (i64.or (i64.shl (global.get $b) (i64.const 16)) (global.get $a)))))
