package auth_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/hubd/hub/internal/auth"
)

func ExampleVerifier_Authenticate() {
	v, err := auth.New(context.Background(), auth.Options{Secret: "dev-secret", Leeway: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	defer v.Close()

	token, err := auth.Mint("dev-secret", "HS256", "u1", []string{"admin"}, time.Hour)
	if err != nil {
		panic(err)
	}
	r := httptest.NewRequest("GET", "/ws/realtime?token="+token, nil)
	id, e := v.Authenticate(r)
	if e != nil {
		panic(e)
	}
	fmt.Println(id.UserID, id.Roles, id.HasRole("admin"))

	_, e = v.Authenticate(httptest.NewRequest("GET", "/ws/realtime", nil))
	fmt.Println(e.Status, e.Code)
	// Output:
	// u1 [admin] true
	// 401 missing_token
}

func ExampleRedact() {
	fmt.Println(auth.Redact("GET /sse/realtime?token=abc.def.ghi&last_event_id=7"))
	// Output: GET /sse/realtime?token=[REDACTED]&last_event_id=7
}
