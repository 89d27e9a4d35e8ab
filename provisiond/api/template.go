package api

import (
	pb "github.com/rackform/terraform-provider-baremetal/internal/api/baremetalv1"
	"github.com/rackform/terraform-provider-baremetal/internal/template"
)

// parseTemplate validates content with internal/template, the code the
// provider runs at plan time and the engine at render time.
func parseTemplate(content string) ([]*pb.TemplateTask, error) {
	t, err := template.Parse(content)
	if err != nil {
		return nil, invalid("%v", err)
	}
	var out []*pb.TemplateTask
	for _, task := range t.Tasks {
		pt := &pb.TemplateTask{Name: task.Name}
		for _, a := range task.Actions {
			pt.Actions = append(pt.Actions, a.Name)
		}
		out = append(out, pt)
	}
	return out, nil
}
