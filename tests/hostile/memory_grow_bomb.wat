;; expect: fail_closed MemoryLimit
;; message: memory limit of 16777216 bytes exceeded: the policy asked for 16842752 bytes
;; Grows its memory until something gives.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64)
    (loop (drop (memory.grow (i32.const 16))) (br 0))
    i64.const 0))
