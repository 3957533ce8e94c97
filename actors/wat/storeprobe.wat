;; storeprobe: calls theater:simple/store functions, for the store handler's tests.
;; State: the store id as UTF-8 bytes.
;;   init           none -> store.new() and the new id is the state (its err is init's err);
;;                  some -> kept as it is (e.g. a shared store id the manifest names)
;;   handle-send    keeps the state
;;   handle-request (state unchanged), by the message's first byte:
;;     'p' data              store(sid, data)                 -> the 64-char hash
;;     'g' hash              get(sid, {hash})                 -> the content
;;     'n' hash              get(sid, {hash})                 -> the content's size in decimal (so a test
;;                                                             can read content no message carries)
;;     'e' hash              exists(sid, {hash})              -> "1" or "0"
;;     'L' label 0x00 data   store-at-label(sid, label, data) -> the hash
;;     'l' label 0x00 hash   label(sid, label, {hash})        -> "ok"
;;     'b' label             get-by-label(sid, label)         -> the hash, or "none"
;;     'r' label             remove-label(sid, label)         -> "ok"
;;     'k'                   list-labels(sid)                 -> the labels joined by "\n"
;;     't'                   calculate-total-size(sid)        -> the u64 as 8 little-endian bytes
;;     'i'                   the state (the store id)
;;   any host err -> "ERR:" + its message; an unknown opcode -> "ERR:unknown op";
;;   an empty message -> "ERR:empty request". Without a NUL, 'L'/'l' take the whole rest as the label.
;;
;; Import return areas (at $res, see echo.wat's cheat sheet), +0 is the result's discriminant:
;;   result<string,string>, result<content-ref,string>, result<list<u8>,string>,
;;   result<list<string>,string>, result<_,string>     ok/err: +4 ptr, +8 len
;;   result<bool,string>                                ok: +4 u8 (the payload is 4-aligned: the err's string)
;;   result<option<content-ref>,string>                 ok: +4 option disc, +8 ptr, +12 len; err: +4 ptr, +8 len
;;   result<u64,string>                                 ok: +8 u64 (8-aligned); err: +8 ptr, +12 len
;;   list<string> elements: 8 bytes each (ptr, len).
;;
;; Memory: a bump allocator (growing the memory as needed) reset by every export's post-return;
;; 0..511 static strings, 512.. host-call results, 1024.. the export's return area, 8192.. heap.
(component
  (import "theater:simple/store" (instance $st
    (type $ref (record (field "hash" string)))
    (export "content-ref" (type $ref-e (eq $ref)))
    (export "new" (func (result (result string (error string)))))
    (export "store" (func (param "store-id" string) (param "content" (list u8))
      (result (result $ref-e (error string)))))
    (export "get" (func (param "store-id" string) (param "content-ref" $ref-e)
      (result (result (list u8) (error string)))))
    (export "exists" (func (param "store-id" string) (param "content-ref" $ref-e)
      (result (result bool (error string)))))
    (export "label" (func (param "store-id" string) (param "label" string) (param "content-ref" $ref-e)
      (result (result (error string)))))
    (export "get-by-label" (func (param "store-id" string) (param "label" string)
      (result (result (option $ref-e) (error string)))))
    (export "remove-label" (func (param "store-id" string) (param "label" string)
      (result (result (error string)))))
    (export "store-at-label" (func (param "store-id" string) (param "label" string) (param "content" (list u8))
      (result (result $ref-e (error string)))))
    (export "list-labels" (func (param "store-id" string)
      (result (result (list string) (error string)))))
    (export "calculate-total-size" (func (param "store-id" string)
      (result (result u64 (error string)))))))

  (core module $mem
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 8192))
    (func (export "realloc") (param $old i32) (param $old-size i32) (param $align i32) (param $size i32) (result i32)
      (local $p i32) (local $end i32) (local $have i32)
      (local.set $p (i32.and
        (i32.add (global.get $next) (i32.sub (local.get $align) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get $align))))
      (local.set $end (i32.add (local.get $p) (local.get $size)))
      (if (i32.lt_u (local.get $end) (local.get $p)) (then unreachable))
      (local.set $have (i32.shl (memory.size) (i32.const 16)))
      (if (i32.gt_u (local.get $end) (local.get $have))
        (then
          (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have))
                                                        (i32.const 65535))
                                               (i32.const 16)))
                      (i32.const -1))
            (then unreachable))))
      (global.set $next (local.get $end))
      (if (local.get $old-size)
        (then (memory.copy (local.get $p) (local.get $old)
                           (select (local.get $old-size) (local.get $size)
                                   (i32.lt_u (local.get $old-size) (local.get $size))))))
      (local.get $p))
    (func (export "reset") (param i32)
      (global.set $next (i32.const 8192))))
  (core instance $mem (instantiate $mem))
  (alias core export $mem "memory" (core memory $memory))
  (alias core export $mem "realloc" (core func $realloc))

  (core func $new (canon lower (func $st "new") (memory $memory) (realloc $realloc)))
  (core func $store (canon lower (func $st "store") (memory $memory) (realloc $realloc)))
  (core func $get (canon lower (func $st "get") (memory $memory) (realloc $realloc)))
  (core func $exists (canon lower (func $st "exists") (memory $memory) (realloc $realloc)))
  (core func $label (canon lower (func $st "label") (memory $memory) (realloc $realloc)))
  (core func $get-by-label (canon lower (func $st "get-by-label") (memory $memory) (realloc $realloc)))
  (core func $remove-label (canon lower (func $st "remove-label") (memory $memory) (realloc $realloc)))
  (core func $store-at-label (canon lower (func $st "store-at-label") (memory $memory) (realloc $realloc)))
  (core func $list-labels (canon lower (func $st "list-labels") (memory $memory) (realloc $realloc)))
  (core func $total-size (canon lower (func $st "calculate-total-size") (memory $memory) (realloc $realloc)))

  (core module $actor
    (import "mem" "memory" (memory 1))
    (import "mem" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    ;; new(return area)
    (import "st" "new" (func $new (param i32)))
    ;; store/get/exists(sid ptr, sid len, data-or-hash ptr, len, return area)
    (import "st" "store" (func $store (param i32 i32 i32 i32 i32)))
    (import "st" "get" (func $get (param i32 i32 i32 i32 i32)))
    (import "st" "exists" (func $exists (param i32 i32 i32 i32 i32)))
    ;; label(sid, label, hash, return area) / store-at-label(sid, label, data, return area)
    (import "st" "label" (func $label (param i32 i32 i32 i32 i32 i32 i32)))
    (import "st" "store-at-label" (func $store-at-label (param i32 i32 i32 i32 i32 i32 i32)))
    ;; get-by-label/remove-label(sid, label, return area)
    (import "st" "get-by-label" (func $get-by-label (param i32 i32 i32 i32 i32)))
    (import "st" "remove-label" (func $remove-label (param i32 i32 i32 i32 i32)))
    ;; list-labels/calculate-total-size(sid, return area)
    (import "st" "list-labels" (func $list-labels (param i32 i32 i32)))
    (import "st" "calculate-total-size" (func $total-size (param i32 i32 i32)))
    (data (i32.const 56) "01")
    (data (i32.const 64) "ok")
    (data (i32.const 72) "none")
    (data (i32.const 96) "ERR:")
    (data (i32.const 104) "ERR:unknown op")                ;; 14
    (data (i32.const 128) "ERR:empty request")             ;; 17
    ;; where host calls write their result
    (global $res i32 (i32.const 512))
    ;; the export's return area
    (global $ret i32 (i32.const 1024))
    ;; the state of the current call, handed back unchanged
    (global $sd (mut i32) (i32.const 0))
    (global $sp (mut i32) (i32.const 0))
    (global $sl (mut i32) (i32.const 0))
    ;; 'L' / 'l': the label and what follows its NUL, set by $split
    (global $lp (mut i32) (i32.const 0))
    (global $ll (mut i32) (i32.const 0))
    (global $rp (mut i32) (i32.const 0))
    (global $rl (mut i32) (i32.const 0))

    (func $alloc (param $size i32) (result i32)
      (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $size)))

    (func $ok (param $d i32) (param $p i32) (param $l i32) (result i32)
      (i32.store8 (global.get $ret) (i32.const 0))
      (i32.store8 offset=4 (global.get $ret) (local.get $d))
      (i32.store offset=8 (global.get $ret) (local.get $p))
      (i32.store offset=12 (global.get $ret) (local.get $l))
      (global.get $ret))

    ;; ok((state, (some(bytes at ptr, len),)))
    (func $reply (param $ptr i32) (param $len i32) (result i32)
      (drop (call $ok (global.get $sd) (global.get $sp) (global.get $sl)))
      (i32.store8 offset=16 (global.get $ret) (i32.const 1))
      (i32.store offset=20 (global.get $ret) (local.get $ptr))
      (i32.store offset=24 (global.get $ret) (local.get $len))
      (global.get $ret))

    ;; "ERR:" + the host's error string, whose (ptr, len) is at $res + off
    (func $err (param $off i32) (result i32)
      (local $ep i32) (local $el i32) (local $out i32)
      (local.set $ep (i32.load (i32.add (global.get $res) (local.get $off))))
      (local.set $el (i32.load (i32.add (global.get $res) (i32.add (local.get $off) (i32.const 4)))))
      (local.set $out (call $alloc (i32.add (local.get $el) (i32.const 4))))
      (memory.copy (local.get $out) (i32.const 96) (i32.const 4))
      (memory.copy (i32.add (local.get $out) (i32.const 4)) (local.get $ep) (local.get $el))
      (call $reply (local.get $out) (i32.add (local.get $el) (i32.const 4))))

    (func $failed (result i32)
      (i32.load8_u (global.get $res)))

    ;; reply the (ptr, len) at $res + 4 (a string, a content-ref's hash or a list<u8>)
    (func $reply4 (result i32)
      (call $reply (i32.load offset=4 (global.get $res)) (i32.load offset=8 (global.get $res))))

    ;; split (ptr, len) at the first NUL: label = before it, rest = after it (empty without a NUL)
    (func $split (param $p i32) (param $l i32)
      (local $i i32) (local $end i32)
      (local.set $end (i32.add (local.get $p) (local.get $l)))
      (local.set $i (local.get $p))
      (block $found
        (loop $scan
          (br_if $found (i32.ge_u (local.get $i) (local.get $end)))
          (br_if $found (i32.eqz (i32.load8_u (local.get $i))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $scan)))
      (global.set $lp (local.get $p))
      (global.set $ll (i32.sub (local.get $i) (local.get $p)))
      (global.set $rp (select (local.get $end) (i32.add (local.get $i) (i32.const 1))
                              (i32.ge_u (local.get $i) (local.get $end))))
      (global.set $rl (i32.sub (local.get $end) (global.get $rp))))

    ;; decimal digits of v at dst; returns how many
    (func $utoa (param $v i64) (param $dst i32) (result i32)
      (local $n i32) (local $t i64) (local $i i32)
      (local.set $n (i32.const 1))
      (local.set $t (local.get $v))
      (block $done
        (loop $count
          (br_if $done (i64.lt_u (local.get $t) (i64.const 10)))
          (local.set $t (i64.div_u (local.get $t) (i64.const 10)))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $count)))
      (local.set $i (local.get $n))
      (loop $digit
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (i32.store8 (i32.add (local.get $dst) (local.get $i))
                    (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 10)))))
        (local.set $v (i64.div_u (local.get $v) (i64.const 10)))
        (br_if $digit (i32.gt_s (local.get $i) (i32.const 0))))
      (local.get $n))

    ;; list-labels' strings (ptr, n; 8 bytes each) joined by "\n"
    (func $join (param $ptr i32) (param $n i32) (result i32)
      (local $i i32) (local $e i32) (local $total i32) (local $out i32) (local $o i32)
      (block $sized
        (loop $size
          (br_if $sized (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $ptr) (i32.mul (local.get $i) (i32.const 8))))
          (local.set $total (i32.add (local.get $total) (i32.add (i32.load offset=4 (local.get $e)) (i32.const 1))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $size)))
      (local.set $out (call $alloc (i32.add (local.get $total) (i32.const 1))))
      (local.set $o (local.get $out))
      (local.set $i (i32.const 0))
      (block $written
        (loop $write
          (br_if $written (i32.ge_u (local.get $i) (local.get $n)))
          (local.set $e (i32.add (local.get $ptr) (i32.mul (local.get $i) (i32.const 8))))
          (if (local.get $i)
            (then
              (i32.store8 (local.get $o) (i32.const 10))
              (local.set $o (i32.add (local.get $o) (i32.const 1)))))
          (memory.copy (local.get $o) (i32.load (local.get $e)) (i32.load offset=4 (local.get $e)))
          (local.set $o (i32.add (local.get $o) (i32.load offset=4 (local.get $e))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $write)))
      (call $reply (local.get $out) (i32.sub (local.get $o) (local.get $out))))

    ;; init: none -> new() is the state; some -> kept
    (func (export "init") (param $d i32) (param $p i32) (param $l i32) (result i32)
      (if (local.get $d) (then (return (call $ok (local.get $d) (local.get $p) (local.get $l)))))
      (call $new (global.get $res))
      (if (call $failed)
        (then
          (i32.store8 (global.get $ret) (i32.const 1))
          (i32.store offset=4 (global.get $ret) (i32.load offset=4 (global.get $res)))
          (i32.store offset=8 (global.get $ret) (i32.load offset=8 (global.get $res)))
          (return (global.get $ret))))
      (call $ok (i32.const 1) (i32.load offset=4 (global.get $res)) (i32.load offset=8 (global.get $res))))

    (func (export "handle-send") (param $d i32) (param $p i32) (param $l i32)
          (param $mp i32) (param $ml i32) (result i32)
      (call $ok (local.get $d) (local.get $p) (local.get $l)))

    (func (export "handle-request") (param $d i32) (param $p i32) (param $l i32)
          (param $idp i32) (param $idl i32) (param $mp i32) (param $ml i32) (result i32)
      (local $op i32) (local $ap i32) (local $al i32)
      (global.set $sd (local.get $d))
      (global.set $sp (local.get $p))
      (global.set $sl (local.get $l))
      (if (i32.eqz (local.get $ml)) (then (return (call $reply (i32.const 128) (i32.const 17)))))
      (local.set $op (i32.load8_u (local.get $mp)))
      (local.set $ap (i32.add (local.get $mp) (i32.const 1)))
      (local.set $al (i32.sub (local.get $ml) (i32.const 1)))

      ;; 'p' store
      (if (i32.eq (local.get $op) (i32.const 112))
        (then (call $store (local.get $p) (local.get $l) (local.get $ap) (local.get $al) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply4))))
      ;; 'g' get
      (if (i32.eq (local.get $op) (i32.const 103))
        (then (call $get (local.get $p) (local.get $l) (local.get $ap) (local.get $al) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply4))))
      ;; 'n' get, replying the size
      (if (i32.eq (local.get $op) (i32.const 110))
        (then (call $get (local.get $p) (local.get $l) (local.get $ap) (local.get $al) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (local.set $ap (call $alloc (i32.const 16)))
              (return (call $reply (local.get $ap)
                (call $utoa (i64.extend_i32_u (i32.load offset=8 (global.get $res))) (local.get $ap))))))
      ;; 'e' exists: the bool at +4
      (if (i32.eq (local.get $op) (i32.const 101))
        (then (call $exists (local.get $p) (local.get $l) (local.get $ap) (local.get $al) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply
                (i32.add (i32.const 56) (i32.ne (i32.load8_u offset=4 (global.get $res)) (i32.const 0)))
                (i32.const 1)))))
      ;; 'L' store-at-label: label 0x00 data
      (if (i32.eq (local.get $op) (i32.const 76))
        (then (call $split (local.get $ap) (local.get $al))
              (call $store-at-label (local.get $p) (local.get $l) (global.get $lp) (global.get $ll)
                                    (global.get $rp) (global.get $rl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply4))))
      ;; 'l' label: label 0x00 hash
      (if (i32.eq (local.get $op) (i32.const 108))
        (then (call $split (local.get $ap) (local.get $al))
              (call $label (local.get $p) (local.get $l) (global.get $lp) (global.get $ll)
                           (global.get $rp) (global.get $rl) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply (i32.const 64) (i32.const 2)))))
      ;; 'b' get-by-label: option disc at +4, hash at +8/+12
      (if (i32.eq (local.get $op) (i32.const 98))
        (then (call $get-by-label (local.get $p) (local.get $l) (local.get $ap) (local.get $al) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (if (i32.eqz (i32.load8_u offset=4 (global.get $res)))
                (then (return (call $reply (i32.const 72) (i32.const 4)))))
              (return (call $reply (i32.load offset=8 (global.get $res)) (i32.load offset=12 (global.get $res))))))
      ;; 'r' remove-label
      (if (i32.eq (local.get $op) (i32.const 114))
        (then (call $remove-label (local.get $p) (local.get $l) (local.get $ap) (local.get $al) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $reply (i32.const 64) (i32.const 2)))))
      ;; 'k' list-labels
      (if (i32.eq (local.get $op) (i32.const 107))
        (then (call $list-labels (local.get $p) (local.get $l) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 4)))))
              (return (call $join (i32.load offset=4 (global.get $res)) (i32.load offset=8 (global.get $res))))))
      ;; 't' calculate-total-size: the u64 at +8, replied as its 8 little-endian bytes
      (if (i32.eq (local.get $op) (i32.const 116))
        (then (call $total-size (local.get $p) (local.get $l) (global.get $res))
              (if (call $failed) (then (return (call $err (i32.const 8)))))
              (return (call $reply (i32.add (global.get $res) (i32.const 8)) (i32.const 8)))))
      ;; 'i' the state
      (if (i32.eq (local.get $op) (i32.const 105))
        (then
          (if (i32.eqz (local.get $d)) (then (return (call $reply (i32.const 72) (i32.const 4)))))
          (return (call $reply (local.get $p) (local.get $l)))))

      (call $reply (i32.const 104) (i32.const 14))))

  (core instance $a (instantiate $actor
    (with "mem" (instance $mem))
    (with "st" (instance
      (export "new" (func $new))
      (export "store" (func $store))
      (export "get" (func $get))
      (export "exists" (func $exists))
      (export "label" (func $label))
      (export "get-by-label" (func $get-by-label))
      (export "remove-label" (func $remove-label))
      (export "store-at-label" (func $store-at-label))
      (export "list-labels" (func $list-labels))
      (export "calculate-total-size" (func $total-size))))))

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
