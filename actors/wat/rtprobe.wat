;; rtprobe: calls the environment, random and runtime host functions, for tests/test_env_random_runtime.py.
;; Imports theater:simple/environment, /random and /runtime: its manifest must grant the
;; environment and random handlers (runtime is every actor's).
;;
;; handle-request: the message's first byte picks the call, the rest are its arguments; the reply
;; is the result as bytes. "+..." is ok / some, "!msg" an err, "-" none.
;;   environment   g NAME -> get-var            ("+value" / "-")
;;                 e NAME -> exists             ("1" / "0")
;;                 l      -> list-vars          ("NAME=value\n" per pair, in the order given)
;;   random        b u32le SIZE      -> random-bytes   ("+" bytes / "!err")
;;                 r u64le MIN u64le MAX -> random-range ("+" u64le / "!err")
;;                 f      -> random-float       ("+" f64le / "!err")
;;                 u      -> generate-uuid      ("+" text / "!err")
;;   runtime       i -> get-actor-id, n -> get-actor-name, v -> get-theater-version (the text)
;;                 t      -> get-current-time   (u64le)
;;                 V NAME -> get-env            ("+value" / "-")
;;                 L u32le N LEVEL(N bytes) MSG -> log-at          ("+" / "!err")
;;                 m f64le VALUE NAME           -> record-metric   ("+" / "!err")
;;                 E u32le N TYPE(N bytes) DATA -> record-event    ("+" / "!err")
;;                 s      -> get-system-info: cpu-count u32le, memory-total, memory-available,
;;                           uptime u64le, then "hostname\nos-type\nos-release"
;;   other first byte: "?"
;; handle-send and init keep the state.
;; Memory: a bump allocator (growing memory as needed) reset by every export's post-return;
;; statics below 8192: 256 the import return area, 512 a scratch word.
(component
  (import "theater:simple/environment" (instance $env
    (export "get-var" (func (param "name" string) (result (option string))))
    (export "list-vars" (func (result (list (tuple string string)))))
    (export "exists" (func (param "name" string) (result bool)))))
  (import "theater:simple/random" (instance $rnd
    (export "random-bytes" (func (param "size" u32) (result (result (list u8) (error string)))))
    (export "random-range" (func (param "min" u64) (param "max" u64) (result (result u64 (error string)))))
    (export "random-float" (func (result (result f64 (error string)))))
    (export "generate-uuid" (func (result (result string (error string)))))))
  (import "theater:simple/runtime" (instance $rt
    (type $info (record
      (field "hostname" string) (field "os-type" string) (field "os-release" string)
      (field "cpu-count" u32) (field "memory-total" u64) (field "memory-available" u64)
      (field "uptime" u64)))
    (export "system-info" (type $info-e (eq $info)))
    (export "get-actor-id" (func (result string)))
    (export "get-actor-name" (func (result string)))
    (export "get-current-time" (func (result u64)))
    (export "log-at" (func (param "level" string) (param "msg" string) (result (result (error string)))))
    (export "record-metric" (func (param "name" string) (param "value" f64) (result (result (error string)))))
    (export "record-event" (func (param "event-type" string) (param "data" (list u8))
                                 (result (result (error string)))))
    (export "get-theater-version" (func (result string)))
    (export "get-system-info" (func (result $info-e)))
    (export "get-env" (func (param "name" string) (result (option string))))))

  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (local.set $have (i32.mul (memory.size) (i32.const 65536)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                       (i32.const 65535)) (i32.const 16)))
                      (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (if (local.get $old-size)
        (then (memory.copy (local.get $p) (local.get $old) (local.get $old-size))))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (i32.const 8192))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))
  (alias core export $mem "realloc" (core func $realloc))

  (core func $get-var (canon lower (func $env "get-var") (memory $memory) (realloc $realloc)))
  (core func $list-vars (canon lower (func $env "list-vars") (memory $memory) (realloc $realloc)))
  (core func $exists (canon lower (func $env "exists") (memory $memory)))
  (core func $random-bytes (canon lower (func $rnd "random-bytes") (memory $memory) (realloc $realloc)))
  (core func $random-range (canon lower (func $rnd "random-range") (memory $memory) (realloc $realloc)))
  (core func $random-float (canon lower (func $rnd "random-float") (memory $memory) (realloc $realloc)))
  (core func $generate-uuid (canon lower (func $rnd "generate-uuid") (memory $memory) (realloc $realloc)))
  (core func $get-actor-id (canon lower (func $rt "get-actor-id") (memory $memory) (realloc $realloc)))
  (core func $get-actor-name (canon lower (func $rt "get-actor-name") (memory $memory) (realloc $realloc)))
  (core func $get-current-time (canon lower (func $rt "get-current-time")))
  (core func $log-at (canon lower (func $rt "log-at") (memory $memory) (realloc $realloc)))
  (core func $record-metric (canon lower (func $rt "record-metric") (memory $memory) (realloc $realloc)))
  (core func $record-event (canon lower (func $rt "record-event") (memory $memory) (realloc $realloc)))
  (core func $get-theater-version (canon lower (func $rt "get-theater-version") (memory $memory) (realloc $realloc)))
  (core func $get-system-info (canon lower (func $rt "get-system-info") (memory $memory) (realloc $realloc)))
  (core func $get-env (canon lower (func $rt "get-env") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "host" "get-var" (func $get-var (param i32 i32 i32)))
    (import "host" "list-vars" (func $list-vars (param i32)))
    (import "host" "exists" (func $exists (param i32 i32) (result i32)))
    (import "host" "random-bytes" (func $random-bytes (param i32 i32)))
    (import "host" "random-range" (func $random-range (param i64 i64 i32)))
    (import "host" "random-float" (func $random-float (param i32)))
    (import "host" "generate-uuid" (func $generate-uuid (param i32)))
    (import "host" "get-actor-id" (func $get-actor-id (param i32)))
    (import "host" "get-actor-name" (func $get-actor-name (param i32)))
    (import "host" "get-current-time" (func $get-current-time (result i64)))
    (import "host" "log-at" (func $log-at (param i32 i32 i32 i32 i32)))
    (import "host" "record-metric" (func $record-metric (param i32 i32 f64 i32)))
    (import "host" "record-event" (func $record-event (param i32 i32 i32 i32 i32)))
    (import "host" "get-theater-version" (func $get-theater-version (param i32)))
    (import "host" "get-system-info" (func $get-system-info (param i32)))
    (import "host" "get-env" (func $get-env (param i32 i32 i32)))
    (global $ret i32 (i32.const 1024))
    (global $r i32 (i32.const 256))      ;; import return area (8-aligned, 64 bytes)
    (global $scratch i32 (i32.const 512))
    (global $ostart (mut i32) (i32.const 0))
    (global $olen (mut i32) (i32.const 0))

    ;; append bytes to the reply: each piece is reserved with align 1 right after the previous
    ;; one (nothing else allocates while the reply is written), so the reply is contiguous
    (func $put (param $p i32) (param $n i32)
      (local $at i32)
      (local.set $at (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $n)))
      (if (i32.eqz (global.get $olen)) (then (global.set $ostart (local.get $at))))
      (memory.copy (local.get $at) (local.get $p) (local.get $n))
      (global.set $olen (i32.add (global.get $olen) (local.get $n))))
    (func $putc (param $c i32)
      (i32.store8 (global.get $scratch) (local.get $c))
      (call $put (global.get $scratch) (i32.const 1)))
    ;; the string (ptr, len) stored at $a
    (func $put-str-at (param $a i32)
      (call $put (i32.load (local.get $a)) (i32.load offset=4 (local.get $a))))
    ;; option<string> at $r: "-" or "+value"
    (func $opt-str (param $r i32)
      (if (i32.load8_u (local.get $r))
        (then (call $putc (i32.const 43)) (call $put-str-at (i32.add (local.get $r) (i32.const 4))))
        (else (call $putc (i32.const 45)))))
    ;; result<string-or-bytes, string> at $r: "+value" / "!err" (both payloads at +4)
    (func $res-str (param $r i32)
      (call $putc (select (i32.const 33) (i32.const 43) (i32.load8_u (local.get $r))))
      (call $put-str-at (i32.add (local.get $r) (i32.const 4))))
    ;; result<_, string> at $r: "+" / "!err"
    (func $res-unit (param $r i32)
      (if (i32.load8_u (local.get $r))
        (then (call $putc (i32.const 33)) (call $put-str-at (i32.add (local.get $r) (i32.const 4))))
        (else (call $putc (i32.const 43)))))
    ;; result<u64-or-f64, string> at $r (payload at +8): "+" 8 bytes / "!err"
    (func $res-8 (param $r i32)
      (if (i32.load8_u (local.get $r))
        (then (call $putc (i32.const 33)) (call $put-str-at (i32.add (local.get $r) (i32.const 8))))
        (else (call $putc (i32.const 43)) (call $put (i32.add (local.get $r) (i32.const 8)) (i32.const 8)))))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func $dispatch (param $op i32) (param $a i32) (param $n i32)
      (local $k i32) (local $i i32) (local $e i32) (local $r i32)
      (local.set $r (global.get $r))
      ;; environment
      (if (i32.eq (local.get $op) (i32.const 103)) ;; g
        (then (call $get-var (local.get $a) (local.get $n) (local.get $r)) (call $opt-str (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 101)) ;; e
        (then (call $putc (i32.add (i32.const 48) (call $exists (local.get $a) (local.get $n)))) (return)))
      (if (i32.eq (local.get $op) (i32.const 108)) ;; l
        (then
          (call $list-vars (local.get $r))
          (local.set $k (i32.load offset=4 (local.get $r)))
          (local.set $i (i32.const 0))
          (block $done (loop $each
            (br_if $done (i32.ge_u (local.get $i) (local.get $k)))
            (local.set $e (i32.add (i32.load (local.get $r)) (i32.mul (local.get $i) (i32.const 16))))
            (call $put-str-at (local.get $e))
            (call $putc (i32.const 61))
            (call $put-str-at (i32.add (local.get $e) (i32.const 8)))
            (call $putc (i32.const 10))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $each)))
          (return)))
      ;; random
      (if (i32.eq (local.get $op) (i32.const 98)) ;; b
        (then (call $random-bytes (i32.load (local.get $a)) (local.get $r)) (call $res-str (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 114)) ;; r
        (then (call $random-range (i64.load (local.get $a)) (i64.load offset=8 (local.get $a)) (local.get $r))
              (call $res-8 (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 102)) ;; f
        (then (call $random-float (local.get $r)) (call $res-8 (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 117)) ;; u
        (then (call $generate-uuid (local.get $r)) (call $res-str (local.get $r)) (return)))
      ;; runtime
      (if (i32.eq (local.get $op) (i32.const 105)) ;; i
        (then (call $get-actor-id (local.get $r)) (call $put-str-at (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 110)) ;; n
        (then (call $get-actor-name (local.get $r)) (call $put-str-at (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 118)) ;; v
        (then (call $get-theater-version (local.get $r)) (call $put-str-at (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 116)) ;; t
        (then (i64.store (global.get $scratch) (call $get-current-time))
              (call $put (global.get $scratch) (i32.const 8)) (return)))
      (if (i32.eq (local.get $op) (i32.const 86)) ;; V
        (then (call $get-env (local.get $a) (local.get $n) (local.get $r)) (call $opt-str (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 76)) ;; L
        (then
          (local.set $k (i32.load (local.get $a)))
          (call $log-at (i32.add (local.get $a) (i32.const 4)) (local.get $k)
                        (i32.add (i32.add (local.get $a) (i32.const 4)) (local.get $k))
                        (i32.sub (i32.sub (local.get $n) (i32.const 4)) (local.get $k))
                        (local.get $r))
          (call $res-unit (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 109)) ;; m
        (then
          (call $record-metric (i32.add (local.get $a) (i32.const 8)) (i32.sub (local.get $n) (i32.const 8))
                               (f64.load (local.get $a)) (local.get $r))
          (call $res-unit (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 69)) ;; E
        (then
          (local.set $k (i32.load (local.get $a)))
          (call $record-event (i32.add (local.get $a) (i32.const 4)) (local.get $k)
                              (i32.add (i32.add (local.get $a) (i32.const 4)) (local.get $k))
                              (i32.sub (i32.sub (local.get $n) (i32.const 4)) (local.get $k))
                              (local.get $r))
          (call $res-unit (local.get $r)) (return)))
      (if (i32.eq (local.get $op) (i32.const 115)) ;; s
        (then
          (call $get-system-info (local.get $r))
          (call $put (i32.add (local.get $r) (i32.const 24)) (i32.const 4))   ;; cpu-count
          (call $put (i32.add (local.get $r) (i32.const 32)) (i32.const 24))  ;; memory-total, -available, uptime
          (call $put-str-at (local.get $r))
          (call $putc (i32.const 10))
          (call $put-str-at (i32.add (local.get $r) (i32.const 8)))
          (call $putc (i32.const 10))
          (call $put-str-at (i32.add (local.get $r) (i32.const 16)))
          (return)))
      (call $putc (i32.const 63)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (global.set $ostart (i32.const 0))
      (global.set $olen (i32.const 0))
      (if (i32.eqz (local.get $ml))
        (then (call $putc (i32.const 63)))
        (else (call $dispatch (i32.load8_u (local.get $mp)) (i32.add (local.get $mp) (i32.const 1))
                              (i32.sub (local.get $ml) (i32.const 1)))))
      (drop (call $ok (local.get $d) (local.get $p) (local.get $l)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (global.get $ostart))
      (i32.store offset=24 (global.get $ret) (global.get $olen))
      (global.get $ret)))
  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "host" (instance
      (export "get-var" (func $get-var))
      (export "list-vars" (func $list-vars))
      (export "exists" (func $exists))
      (export "random-bytes" (func $random-bytes))
      (export "random-range" (func $random-range))
      (export "random-float" (func $random-float))
      (export "generate-uuid" (func $generate-uuid))
      (export "get-actor-id" (func $get-actor-id))
      (export "get-actor-name" (func $get-actor-name))
      (export "get-current-time" (func $get-current-time))
      (export "log-at" (func $log-at))
      (export "record-metric" (func $record-metric))
      (export "record-event" (func $record-event))
      (export "get-theater-version" (func $get-theater-version))
      (export "get-system-info" (func $get-system-info))
      (export "get-env" (func $get-env))))))

  (func $init (param "state" (option (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "init") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $send (param "state" (option (list u8))) (param "params" (tuple (list u8)))
    (result (result (tuple (option (list u8))) (error string)))
    (canon lift (core func $a "handle-send") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))
  (func $request (param "state" (option (list u8))) (param "params" (tuple string (list u8)))
    (result (result (tuple (option (list u8)) (tuple (option (list u8)))) (error string)))
    (canon lift (core func $a "handle-request") (memory $memory) (realloc $realloc)
      (post-return (core func $mem "reset"))))

  (instance $actor-exports (export "init" (func $init)))
  (instance $msc-exports
    (export "handle-send" (func $send))
    (export "handle-request" (func $request)))
  (export "theater:simple/actor" (instance $actor-exports))
  (export "theater:simple/message-server-client" (instance $msc-exports))
)
