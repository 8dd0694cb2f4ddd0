;; A complete rulehost policy (ABI v1) written by hand in the WebAssembly
;; text format, to show that any language that can produce a core module and
;; bytes of JSON can write a policy. See sdk/ABI.md.
;;
;; It implements one hook, `authorize`: requests from the self-service portal
;; are denied, everything else is allowed. It does not parse JSON; it looks
;; for the bytes `"self_service"` in the envelope, which is enough here.

(module
  (memory (export "memory") 1)

  ;; Replies, prepared as data: `{"ok": <decision>}`.
  (data (i32.const 0) "{\"ok\":{\"decision\":\"allow\"}}")
  (data (i32.const 64) "{\"ok\":{\"decision\":\"deny\",\"code\":\"self_service\",\"reason\":\"the portal may not do this\"}}")
  (data (i32.const 256) "\"self_service\"")

  ;; The input buffer starts here; the host allocates one per evaluation.
  (global $input i32 (i32.const 1024))

  (func (export "rulehost_abi_version") (result i32)
    i32.const 1)

  ;; Hands out the input buffer, growing memory when the input is large.
  (func (export "rulehost_alloc") (param $len i32) (result i32)
    (local $needed i32)
    (local.set $needed
      (i32.shr_u
        (i32.add (i32.add (global.get $input) (local.get $len)) (i32.const 65535))
        (i32.const 16)))
    (if (i32.gt_u (local.get $needed) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $needed) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.get $input))

  ;; 1 when the 14 bytes at 256 occur in [ptr, ptr+len).
  (func $mentions_self_service (param $ptr i32) (param $len i32) (result i32)
    (local $at i32)
    (local $i i32)
    (local.set $at (local.get $ptr))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $at) (i32.const 14))
                               (i32.add (local.get $ptr) (local.get $len))))
        (local.set $i (i32.const 0))
        (block $mismatch
          (loop $compare
            (br_if $mismatch
              (i32.ne (i32.load8_u (i32.add (local.get $at) (local.get $i)))
                      (i32.load8_u (i32.add (i32.const 256) (local.get $i)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (if (i32.eq (local.get $i) (i32.const 14)) (then (return (i32.const 1))))
            (br $compare)))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Returns the reply's pointer in the high 32 bits, its length in the low.
  (func (export "rulehost_authorize") (param $ptr i32) (param $len i32) (result i64)
    (if (result i64) (call $mentions_self_service (local.get $ptr) (local.get $len))
      (then (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 86)))
      (else (i64.or (i64.shl (i64.const 0) (i64.const 32)) (i64.const 27)))))
)
