;; expect: fail_closed MalformedOutput
;; message: output is not a valid reply: unknown variant `maybe`, expected one of `allow`, `deny`, `needs_confirmation` at line 1 column 25
;; Answers valid JSON that is not an authorize decision.
(module
  (memory (export "memory") 1)
  (func (export "rulehost_abi_version") (result i32) i32.const 1)
  (func (export "rulehost_alloc") (param i32) (result i32) i32.const 1024)
  (data (i32.const 0) "{\"ok\":{\"decision\":\"maybe\"}}")
  (func (export "rulehost_authorize") (param i32 i32) (result i64) i64.const 27))
