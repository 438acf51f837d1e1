package upstream_test

import (
	"fmt"

	"github.com/hubd/hub/transport/upstream"
)

// A backend recomputes the X-Hub-Signature of the raw body with the shared
// secret and compares it in constant time (hmac.Equal).
func ExampleSign() {
	body := []byte(`{"userId":"u1","idempotencyKey":"k-1","event":{"type":"ORDER_UPDATE","payload":null}}`)
	fmt.Println(upstream.Sign("secret", body)[:7])
	// Output: sha256=
}
