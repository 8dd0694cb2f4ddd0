;; expect: fail_closed Trap
;; message: wasm trap: wasm `unreachable` instruction executed
;; Traps at once.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "rulehost_authorize") (param i32 i32) (result i64) unreachable))
